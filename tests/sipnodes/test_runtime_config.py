import copy

from sipnodes import services
from sipnodes.credentials import digest_ha1
from sipnodes.engine.config import parse_config
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


def test_only_a_port_change_needs_a_restart(tenant_a, tmp_path):
    old = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    new = copy.deepcopy(old)
    new["users"] = []
    new["system"]["media_relay"] = False
    assert not needs_restart(old, new)
    new["listen"]["callback_port"] = 0
    assert needs_restart(old, new)
    assert needs_restart(None, new)


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
