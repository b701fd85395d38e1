"""Trunks, DIDs, dial-plan rules and the external line in the control plane: the rules
the services keep, the worker config they render, and the trunk state ingest writes.

The pages are in tests/tenants/test_trunks.py; who may reach them in
tests/tenants/test_isolation.py.
"""

import datetime
import json

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from sipnodes import features_services, services, trunk_selectors, trunk_services
from sipnodes.engine.events import EventType, TrunkData, make_event
from sipnodes.ingest.batch import TrunkReport, ingest_batch, record_trunk_states
from sipnodes.models import DialRule, Trunk, TrunkDid, VirtualServer
from sipnodes.runtime_config import render_runtime_config
from tests.factories import SAMPLE_T0 as T0

PASSWORD = "s3cret-trunk-pass"


def make_trunk(server: VirtualServer, name: str = "ITSP", **values: object) -> Trunk:
    fields: dict[str, object] = {
        "name": name,
        "address": "203.0.113.5",
        "port": 5060,
        "transport": "UDP",
        "mode": "register",
        "username": "acme",
        "auth_username": "",
        "realm": "",
        "expires": 3600,
        "caller_id": "",
        "default_user": None,
    }
    fields |= values
    password = fields.pop("password", PASSWORD)
    dids = fields.pop("dids", [])
    return trunk_services.trunk_create(server=server, password=password, dids=dids, **fields)


def make_rule(server: VirtualServer, prefix: str = "0", **values: object) -> DialRule:
    fields: dict[str, object] = {
        "prefix": prefix,
        "route": "sip_trunk",
        "trunk": None,
        "strip": 1,
        "add": "",
        "call_level": 0,
    }
    fields |= values
    confirmed = bool(fields.pop("confirmed", False))
    return trunk_services.dial_rule_create(server=server, confirmed=confirmed, **fields)


def field_errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return exc.value.message_dict


def at(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


# ---- trunks ------------------------------------------------------------------------------


def test_a_trunk_with_dids_is_saved_and_handed_to_the_worker(
    tenant_a, django_capture_on_commit_callbacks
):
    user = tenant_a.user
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        trunk = make_trunk(tenant_a.server, dids=[("85550100", user)], default_user=user)
    assert len(callbacks) == 1  # one apply_server
    assert [(d.number, d.user) for d in trunk.dids.all()] == [("85550100", user)]
    assert trunk.password == PASSWORD and trunk.state == Trunk.State.UNKNOWN


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"address": "not an address"}, "address"),
        ({"address": "10.0.0"}, "address"),
        ({"address": "-bad.example.com"}, "address"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"transport": "TLS"}, "transport"),
        ({"mode": "magic"}, "mode"),
        ({"expires": 59}, "expires"),
        ({"expires": 86401}, "expires"),
        ({"caller_id": "+44"}, "caller_id"),
        ({"username": ""}, "username"),
        ({"username": 'a"b'}, "username"),
        ({"realm": 'x"y'}, "realm"),
        ({"password": ""}, "password"),
        ({"password": "a\nb"}, "password"),
    ],
)
def test_bad_trunk_fields_are_refused_by_name(tenant_a, values, field):
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server, **values)
    assert field in field_errors(exc)
    assert not Trunk.objects.exists()


@pytest.mark.parametrize("address", ["sip.example.com", "localhost", "2001:db8::1", "192.0.2.7"])
def test_an_ip_address_or_a_host_name_is_an_address(tenant_a, address):
    assert make_trunk(tenant_a.server, address=address).address == address


def test_an_ip_trust_trunk_needs_no_account(tenant_a):
    trunk = make_trunk(tenant_a.server, mode="ip_trust", username="", password="")
    assert not trunk.registers and not trunk.has_password


def test_trunk_names_and_dids_are_unique_per_server(tenant_a, tenant_b):
    first = make_trunk(tenant_a.server, dids=[("85550100", tenant_a.user)])
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server)
    assert "name" in field_errors(exc)
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server, name="Other", dids=[("85550100", tenant_a.user)])
    assert field_errors(exc)["dids"] == ["85550100 is already a DID of trunk ITSP."]
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server, name="Other", dids=[("1", tenant_a.user), ("1", tenant_a.user)])
    assert "dids" in field_errors(exc)
    # Another server may use the same name and number.
    make_trunk(tenant_b.server, dids=[("85550100", tenant_b.user)])
    # Saving a trunk again keeps its own DIDs.
    trunk_services.trunk_update(trunk=first, dids=[("85550100", tenant_a.user)])
    # And the database holds each number once per server, whatever the service does.
    with pytest.raises(IntegrityError), transaction.atomic():
        other = make_trunk(tenant_a.server, name="Other")
        TrunkDid.objects.create(
            server=tenant_a.server, trunk=other, number="85550100", user=tenant_a.user
        )


def test_users_of_another_server_cannot_be_named(tenant_a, tenant_b):
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server, default_user=tenant_b.user)
    assert "default_user" in field_errors(exc)
    with pytest.raises(ValidationError) as exc:
        make_trunk(tenant_a.server, dids=[("85550100", tenant_b.user)])
    assert "dids" in field_errors(exc)


def test_the_password_is_kept_replaced_or_cleared(tenant_a):
    trunk = make_trunk(tenant_a.server)
    trunk_services.trunk_update(trunk=trunk, password=None, name="Renamed")
    assert Trunk.objects.get().password == PASSWORD
    trunk_services.trunk_update(trunk=trunk, password="new-one")
    assert Trunk.objects.get().password == "new-one"
    with pytest.raises(ValidationError) as exc:  # a registering trunk needs one
        trunk_services.trunk_update(trunk=trunk, password="")
    assert "password" in field_errors(exc)
    trunk.refresh_from_db()
    trunk_services.trunk_update(trunk=trunk, password="", mode="ip_trust")
    assert Trunk.objects.get().password == ""


def test_changing_what_the_worker_registers_with_resets_the_state_shown(tenant_a):
    trunk = make_trunk(tenant_a.server)
    Trunk.objects.filter(pk=trunk.pk).update(
        state=Trunk.State.FAILING, state_reason="403 Forbidden", state_at=at(T0)
    )
    trunk.refresh_from_db()
    trunk_services.trunk_update(trunk=trunk, name="Renamed")  # not a registration field
    trunk.refresh_from_db()
    assert trunk.state == Trunk.State.FAILING
    trunk_services.trunk_update(trunk=trunk, password="fixed")
    trunk.refresh_from_db()
    assert (trunk.state, trunk.state_reason) == (Trunk.State.UNKNOWN, "")
    assert trunk.state_at > at(T0)


def test_deleting_a_trunk_is_refused_while_rules_use_it_and_clears_the_external_line(tenant_a):
    server = tenant_a.server
    trunk = make_trunk(server)
    rule = make_rule(server, trunk=trunk)
    trunk_services.server_set_external_line(server=server, trunk=trunk)
    with pytest.raises(ValidationError) as exc:
        trunk_services.trunk_delete(trunk=trunk)
    assert exc.value.messages == [
        "Dial-plan rules for 0 use trunk ITSP: change or delete them first."
    ]
    trunk_services.dial_rule_delete(rule=rule)
    trunk_services.trunk_delete(trunk=trunk)
    server.refresh_from_db()
    assert server.external_line is None and not Trunk.objects.exists()


def test_a_server_is_deleted_with_its_trunks_and_rules(tenant_a):
    server = tenant_a.server
    trunk = make_trunk(server, dids=[("85550100", tenant_a.user)])
    make_rule(server, trunk=trunk)
    trunk_services.server_set_external_line(server=server, trunk=trunk)
    services.server_delete(server=server)
    assert not (Trunk.objects.exists() or DialRule.objects.exists() or TrunkDid.objects.exists())


def test_deleting_a_local_user_drops_its_dids_and_the_default_user(tenant_a):
    user, _ = services.local_user_create(server=tenant_a.server, number="200")
    trunk = make_trunk(tenant_a.server, dids=[("85550100", user)], default_user=user)
    services.local_user_delete(user=user)
    trunk.refresh_from_db()
    assert trunk.default_user is None and not trunk.dids.exists()


def test_the_external_line_is_a_trunk_of_the_same_server(tenant_a, tenant_b):
    other = make_trunk(tenant_b.server)
    with pytest.raises(ValidationError) as exc:
        trunk_services.server_set_external_line(server=tenant_a.server, trunk=other)
    assert "external_line" in field_errors(exc)
    trunk_services.server_set_external_line(server=tenant_a.server, trunk=None)


# ---- dial-plan rules --------------------------------------------------------------------


def test_a_sip_trunk_rule_needs_a_trunk_of_its_server(tenant_a, tenant_b):
    with pytest.raises(ValidationError) as exc:
        make_rule(tenant_a.server)
    assert "trunk" in field_errors(exc)
    with pytest.raises(ValidationError) as exc:
        make_rule(tenant_a.server, trunk=make_trunk(tenant_b.server))
    assert "trunk" in field_errors(exc)


def test_a_local_user_rule_goes_to_no_trunk(tenant_a):
    trunk = make_trunk(tenant_a.server)
    rule = make_rule(tenant_a.server, "8", route="local_user", trunk=trunk, strip=1)
    assert rule.trunk is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "0a"}, "prefix"),
        ({"add": "x"}, "add"),
        ({"strip": 33}, "strip"),
        ({"call_level": 10}, "call_level"),
        ({"route": "external_line"}, "route"),
    ],
)
def test_bad_rules_are_refused_by_name(tenant_a, values, field):
    trunk = make_trunk(tenant_a.server)
    with pytest.raises(ValidationError) as exc:
        make_rule(tenant_a.server, **({"trunk": trunk} | values))
    assert field in field_errors(exc)


def test_prefixes_are_unique_per_server(tenant_a, tenant_b):
    make_rule(tenant_a.server, trunk=make_trunk(tenant_a.server))
    with pytest.raises(ValidationError) as exc:
        make_rule(tenant_a.server, trunk=Trunk.objects.get(server=tenant_a.server))
    assert "prefix" in field_errors(exc)
    make_rule(tenant_b.server, trunk=make_trunk(tenant_b.server))


def test_a_rule_that_hides_local_numbers_needs_confirming(tenant_a):
    server = tenant_a.server
    trunk = make_trunk(server)
    features_services.hunt_group_create(
        server=server, number="150", name="Sales", mode="simultaneous", members=[tenant_a.user]
    )
    with pytest.raises(ValidationError) as exc:
        make_rule(server, "1", trunk=trunk)
    [warning] = field_errors(exc)["confirm"]
    assert warning == (
        "2 local numbers begin with 1 (100, 150): calls to them will follow this rule "
        "instead of ringing them."
    )
    assert not DialRule.objects.exists()
    make_rule(server, "1", trunk=trunk, confirmed=True)
    # A rule that hands local numbers on unchanged hides nothing.
    make_rule(server, "10", route="local_user", strip=0)


def test_a_rule_that_takes_the_out_group_prefix_needs_confirming(tenant_a):
    server = tenant_a.server
    trunk = make_trunk(server)
    for prefix in ("9", "90"):
        warnings = trunk_selectors.dial_rule_warnings(
            server=server, prefix=prefix, route="sip_trunk", strip=1, add="", call_level=0
        )
        assert len(warnings) == 1 and "out-group prefix" in warnings[0]
    with pytest.raises(ValidationError) as exc:
        make_rule(server, "90", trunk=trunk)
    assert "confirm" in field_errors(exc)
    make_rule(server, "90", trunk=trunk, confirmed=True)
    assert trunk_selectors.out_group_prefix_warnings(server=server, out_group_prefix="9")
    assert not trunk_selectors.out_group_prefix_warnings(server=server, out_group_prefix="7")


# ---- the worker's config -----------------------------------------------------------------


def test_trunks_rules_and_the_external_line_are_rendered_as_the_engine_contract_says(
    tenant_a, tmp_path
):
    server = tenant_a.server
    sales, _ = services.local_user_create(server=server, number="200")
    itsp = make_trunk(
        server,
        dids={"85550100": tenant_a.user, "85550200": sales}.items(),
        default_user=sales,
        caller_id="85550100",
        realm="itsp.example",
        auth_username="acme-auth",
        expires=600,
    )
    gateway = make_trunk(
        server,
        "Gateway",
        address="gw.example.com",
        port=5080,
        transport="TCP",
        mode="ip_trust",
        username="stored",
        password="stored-but-not-sent",
        caller_prefix="7",
        inbound="local",
    )
    make_rule(server, "0", trunk=itsp)
    make_rule(server, "8", route="local_user", strip=1, add="1", call_level=2)
    trunk_services.server_set_external_line(server=server, trunk=gateway)
    rendered = render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path)

    assert rendered["trunks"] == [
        {
            "id": itsp.pk,
            "name": "ITSP",
            "address": "203.0.113.5",
            "port": 5060,
            "transport": "UDP",
            "registration": {
                "user": "acme",
                "auth_user": "acme-auth",
                "password": PASSWORD,
                "realm": "itsp.example",
                "expires": 600,
            },
            "caller_id": "85550100",
            "caller_prefix": "",
            "inbound": "dids",
            "dids": {"85550100": "100", "85550200": "200"},
            "default_user": "200",
        },
        {
            "id": gateway.pk,
            "name": "Gateway",
            "address": "gw.example.com",
            "port": 5080,
            "transport": "TCP",
            "registration": None,
            "caller_id": "",
            "caller_prefix": "7",
            "inbound": "local",
            "dids": {},
            "default_user": "",
        },
    ]
    assert rendered["dial_plan"] == [
        {
            "prefix": "0",
            "route": "sip_trunk",
            "trunk": itsp.pk,
            "strip": 1,
            "add": "",
            "call_level": 0,
        },
        {"prefix": "8", "route": "local_user", "strip": 1, "add": "1", "call_level": 2},
    ]
    assert rendered["external_line"] == gateway.pk
    # An IP-trust trunk's stored credentials stay in the database.
    assert "stored-but-not-sent" not in json.dumps(rendered)


def test_a_server_without_trunks_renders_none(tenant_a, tmp_path):
    rendered = render_runtime_config(tenant_a.server, redis_url="redis://", spool_dir=tmp_path)
    assert (rendered["trunks"], rendered["dial_plan"], rendered["external_line"]) == ([], [], None)


def test_the_engine_reads_the_rendered_trunks(tenant_a, tmp_path):
    """The round trip through the engine's own parser (its side of the contract)."""
    from sipnodes.engine.config import parse_config

    server = tenant_a.server
    trunk = make_trunk(server, dids=[("85550100", tenant_a.user)], default_user=tenant_a.user)
    make_rule(server, "0", trunk=trunk)
    trunk_services.server_set_external_line(server=server, trunk=trunk)
    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))
    [parsed] = config.trunks
    assert (parsed.id, parsed.address, dict(parsed.dids)) == (
        trunk.pk,
        "203.0.113.5",
        {"85550100": "100"},
    )
    assert parsed.registration is not None and parsed.registration.password == PASSWORD
    assert config.external_line == trunk.pk
    assert config.dial_plan[0].trunk == trunk.pk


# ---- trunk state from the worker -----------------------------------------------------------


def report(trunk: Trunk, ts: float, state: str = "registered", **changes: object) -> TrunkReport:
    values: dict[str, object] = {
        "server_id": trunk.server_id,
        "trunk_id": trunk.pk,
        "ts": ts,
        "state": state,
        "reason": "",
        "attempt": ts,
        "next_attempt": None,
    }
    return TrunkReport(**(values | changes))  # type: ignore[arg-type]


def state_of(trunk: Trunk) -> tuple:
    trunk.refresh_from_db()
    return (trunk.state, trunk.state_reason, trunk.last_attempt_at, trunk.next_attempt_at)


@pytest.fixture
def trunk(tenant_a) -> Trunk:
    trunk = make_trunk(tenant_a.server)
    Trunk.objects.filter(pk=trunk.pk).update(state_at=None)  # as if made before any report
    return trunk


def test_the_newest_report_wins_whatever_the_order(trunk):
    failing = report(trunk, T0 + 2, "failing", reason="401 wrong password", next_attempt=T0 + 62)
    assert record_trunk_states([failing, report(trunk, T0 + 1)]) == 1
    assert state_of(trunk) == ("failing", "401 wrong password", at(T0 + 2), at(T0 + 62))
    record_trunk_states([report(trunk, T0)])  # read late
    assert state_of(trunk)[0] == "failing"
    record_trunk_states([report(trunk, T0 + 70)])
    assert state_of(trunk) == ("registered", "", at(T0 + 70), None)


def test_a_report_with_an_older_attempt_is_ignored(trunk):
    record_trunk_states([report(trunk, T0 + 10, attempt=T0 + 10)])
    record_trunk_states([report(trunk, T0 + 20, "failing", attempt=T0 + 5)])
    assert state_of(trunk)[0] == "registered"


def test_reports_about_settings_changed_since_are_ignored(trunk):
    trunk_services.trunk_update(trunk=trunk, password="changed")
    trunk.refresh_from_db()
    before_edit = trunk.state_at.timestamp() - 1
    record_trunk_states([report(trunk, before_edit, "failing", reason="401")])
    assert state_of(trunk)[0] == "unknown"


def test_a_report_for_another_servers_trunk_or_a_deleted_one_changes_nothing(trunk, tenant_b):
    other = make_trunk(tenant_b.server)
    assert record_trunk_states([report(other, T0, server_id=trunk.server_id)]) == 0
    assert record_trunk_states([report(trunk, T0, trunk_id=other.pk + 1000)]) == 0
    assert state_of(trunk)[0] == "unknown" and state_of(other)[0] == "unknown"


def test_a_long_reason_is_cut_to_fit(trunk):
    record_trunk_states([report(trunk, T0, "failing", reason="x" * 1000)])
    assert state_of(trunk)[1] == "x" * 255


def test_trunk_events_reach_the_trunk_through_ingest(trunk):
    data = TrunkData(
        trunk=trunk.pk, state="failing", reason="no answer", attempt=T0, next_attempt=T0 + 30
    )
    event = make_event(data, trunk.server_id, T0 + 0.5)
    fields = {k.encode(): v.encode() for k, v in event.fields().items()}
    batch = [(b"1-0", fields)]
    result = ingest_batch(batch)
    assert result.by_type[EventType.TRUNK] == 1 and result.bad == ()
    assert state_of(trunk) == ("failing", "no answer", at(T0), at(T0 + 30))
    assert ingest_batch(batch) == result  # replayed: the same, nothing moves
    assert state_of(trunk) == ("failing", "no answer", at(T0), at(T0 + 30))


# ---- operator pages ------------------------------------------------------------------------


def test_the_trunk_admin_never_shows_the_password(operator_client, tenant_a):
    trunk = make_trunk(tenant_a.server, dids=[("85550100", tenant_a.user)])
    for page in ("/admin/sipnodes/trunk/", f"/admin/sipnodes/trunk/{trunk.pk}/change/"):
        response = operator_client.get(page)
        html = response.content.decode()
        assert response.status_code == 200 and "ITSP" in html
        assert PASSWORD not in html
    assert ">set<" in html and "85550100" in html
