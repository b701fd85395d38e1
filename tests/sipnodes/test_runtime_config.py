import copy
import dataclasses

import pytest
from django.core.exceptions import ValidationError

from sipnodes import features_services, services
from sipnodes.credentials import digest_ha1
from sipnodes.engine.config import FeatureCodes, Forwarding, HuntGroup, parse_config
from sipnodes.engine.events import live_calls_key, live_channel
from sipnodes.engine.location import location_key
from sipnodes.runtime_config import needs_restart, render_runtime_config


def test_the_rendered_config_is_what_the_engine_accepts(tenant_a, tmp_path):
    server = tenant_a.server
    services.server_update_settings(server=server, out_group_prefix="0", cdr_failed_calls=False)
    _, issued = services.local_user_create(server=server, number="200", display_name="Sales")
    rendered = render_runtime_config(server, redis_url="redis://r:1/2", spool_dir=tmp_path)

    config = parse_config(rendered)
    assert config.server_id == server.pk and config.realm == server.realm
    assert config.max_clients == 5
    assert config.listen.sip_port == server.sip_port
    assert config.listen.callback_port == server.callback_port
    assert config.listen.media_ports == (server.media_port_first, server.media_port_last)
    assert config.system.out_group_prefix == "0"
    assert config.cdr.failed_call_cdr is False
    assert config.callback.app_server_address == "127.0.0.1"
    assert [u.number for u in config.users] == ["100", "200"]
    sales = config.users_by_number["200"]
    assert (sales.ha1_md5, sales.ha1_sha256) == digest_ha1("200", server.realm, issued.password)


def test_the_rendered_config_holds_no_plaintext_password(tenant_a, tmp_path):
    _, issued = services.local_user_create(server=tenant_a.server, number="300")
    rendered = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    assert issued.password not in repr(rendered)


def test_only_a_sip_port_or_address_change_needs_a_restart(tenant_a, tmp_path):
    old = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    new = copy.deepcopy(old)
    new["users"] = []
    new["system"]["media_relay"] = False
    new["listen"]["callback_port"] = 0  # the worker re-binds it at the reload
    new["callback"].update(app_server_address="10.0.0.9", port=0, secret="s" * 64)
    assert not needs_restart(old, new)
    new["listen"]["sip_port"] += 1
    assert needs_restart(old, new)
    assert needs_restart(None, new)


def test_the_callback_secret_reaches_the_worker(tenant_a, tmp_path):
    server = tenant_a.server
    services.server_update_callback(
        server=server,
        app_server_address="10.0.0.9",
        port=server.callback_port,
        default_caller="8000",
        secret="0123456789abcdef" * 4,
    )
    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))
    assert config.callback.secret == "0123456789abcdef" * 4
    assert (config.callback.app_server_address, config.callback.default_caller) == (
        "10.0.0.9",
        "8000",
    )


def test_the_live_state_is_keyed_by_the_servers_uid_not_its_id(tenant_a, tenant_b, tmp_path):
    config = parse_config(
        render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    )
    uid = str(tenant_a.server.uid)
    assert config.server_id == tenant_a.server.pk and config.server_uid == uid
    assert location_key(config.server_uid) == f"sipcloud:vs:{uid}:loc"
    assert live_calls_key(config.server_uid) == f"sipcloud:vs:{uid}:calls"
    assert live_channel(config.server_uid) == f"sipcloud:vs:{uid}:live"
    assert tenant_a.server.uid != tenant_b.server.uid


def test_a_config_rendered_before_servers_had_a_uid_keys_by_its_id(tenant_a, tmp_path):
    rendered = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    del rendered["server_uid"]
    config = parse_config(rendered)
    assert config.server_uid == f"id-{tenant_a.server.pk}"
    assert location_key(config.server_uid) == f"sipcloud:vs:id-{tenant_a.server.pk}:loc"


def test_call_features_reach_the_engine_as_it_reads_them(tenant_a, tmp_path):
    server = tenant_a.server
    sales, _ = services.local_user_create(server=server, number="201")
    user = tenant_a.user
    features_services.local_user_update_call_settings(
        user=user,
        seen_changed=None,
        dnd=True,
        forward_unconditional="",
        forward_busy="201",
        forward_no_answer="600",
        forward_unreachable="9",
        no_answer_seconds=25,
        pickup_group=4,
    )
    features_services.hunt_group_create(
        server=server,
        number="600",
        name="Sales",
        mode="sequential",
        members=[sales, user],
        ring_seconds=10,
        timeout=40,
        overflow="100",
    )
    features_services.feature_codes_rename(server=server, codes={"dnd_on": "*55"})
    user.refresh_from_db()

    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))

    read = config.users_by_number["100"]
    assert (read.dnd, read.pickup_group) == (True, 4)
    assert read.forwarding == Forwarding(
        busy="201", no_answer="600", unreachable="9", no_answer_seconds=25
    )
    assert read.settings_changed == user.call_settings_changed.timestamp()
    untouched = config.users_by_number["201"]
    assert (untouched.dnd, untouched.forwarding, untouched.pickup_group) == (False, Forwarding(), 0)
    assert untouched.settings_changed == 0.0
    assert config.hunt_groups == (
        HuntGroup(
            number="600",
            name="Sales",
            mode="sequential",
            members=("201", "100"),
            ring_seconds=10,
            timeout=40,
            overflow="100",
        ),
    )
    assert config.feature_codes == dataclasses.replace(FeatureCodes(), dnd_on="*55")


def test_a_server_without_call_features_renders_every_default_code(tenant_a, tmp_path):
    rendered = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    assert rendered["hunt_groups"] == []
    assert rendered["feature_codes"] == dataclasses.asdict(FeatureCodes())
    assert rendered["users"][0]["forwarding"] == dataclasses.asdict(Forwarding())


@pytest.mark.parametrize(
    "values", [{"app_server_address": "as.example.com"}, {"secret": "short one"}]
)
def test_what_the_worker_would_refuse_is_refused_when_saved(tenant_a, values):
    server = tenant_a.server
    settings = {"app_server_address": "", "port": 0, "default_caller": "", **values}
    with pytest.raises(ValidationError):
        services.server_update_callback(server=server, **settings)
    server.refresh_from_db()
    assert (server.callback_app_server_address, server.callback_secret) == ("127.0.0.1", "")
