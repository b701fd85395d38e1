"""The trunk and dial-plan pages, and the trunk state on the server page.

Who may reach them (members of the server's tenant only, viewers read only) is tested
for every URL in tests/tenants/test_isolation.py; the services' rules in
tests/sipnodes/test_trunks.py; here, what the pages do.
"""

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from sipnodes import trunk_services
from sipnodes.models import DialRule, Trunk, VirtualServer
from tests.factories import make_member
from tests.sipnodes.test_trunks import PASSWORD, make_rule, make_trunk


def url(name: str, server: VirtualServer, *args: int) -> str:
    return reverse(f"tenants:{name}", args=[server.pk, *args])


def trunk_form(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "ITSP",
        "address": "sip.example.com",
        "port": 5060,
        "transport": "UDP",
        "mode": "register",
        "username": "acme",
        "auth_username": "",
        "password": PASSWORD,
        "realm": "",
        "expires": 3600,
        "caller_id": "",
        "caller_prefix": "",
        "inbound": "dids",
        "dids": "85550100 = 100\n\n85550101=100\n",
        "default_user": "",
    }
    return data | changes


def rule_form(trunk: Trunk | None, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "prefix": "0",
        "route": "sip_trunk",
        "trunk": trunk.pk if trunk else "",
        "strip": 1,
        "add": "",
        "call_level": 0,
    }
    return data | changes


# ---- trunks ------------------------------------------------------------------------------


def test_the_server_page_links_trunks_and_dial_plan(owner_client, tenant_a):
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert url("trunk-list", tenant_a.server) in html
    assert url("dial-rule-list", tenant_a.server) in html


def test_an_owner_adds_a_trunk_with_dids_and_sees_it_listed(owner_client, tenant_a):
    response = owner_client.post(url("trunk-create", tenant_a.server), trunk_form())
    assert response.status_code == 302
    trunk = Trunk.objects.get()
    assert (trunk.address, trunk.password) == ("sip.example.com", PASSWORD)
    assert sorted(d.number for d in trunk.dids.all()) == ["85550100", "85550101"]
    html = owner_client.get(url("trunk-list", tenant_a.server)).content.decode()
    assert "ITSP" in html and "85550100 → 100" in html and "Not reported yet" in html
    assert PASSWORD not in html


def test_the_password_is_never_shown_again(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server, dids=[("85550100", tenant_a.user)])
    edit = url("trunk-edit", tenant_a.server, trunk.pk)
    html = owner_client.get(edit).content.decode()
    assert PASSWORD not in html
    assert "Set; it is not shown again." in html and "85550100 = 100" in html
    # Not even when the form comes back with an error in another field.
    response = owner_client.post(edit, trunk_form(password="typed-new-one", port=0))
    html = response.content.decode()
    assert response.status_code == 200 and "typed-new-one" not in html and PASSWORD not in html
    # Left blank, it is kept; typed, it replaces; "remove" clears it.
    owner_client.post(edit, trunk_form(password="", mode="ip_trust"))
    assert Trunk.objects.get().password == PASSWORD
    owner_client.post(edit, trunk_form(password="replaced"))
    assert Trunk.objects.get().password == "replaced"
    both = trunk_form(password="another", mode="ip_trust", clear_password="on")
    assert "not both" in owner_client.post(edit, both).content.decode()
    owner_client.post(edit, trunk_form(password="", mode="ip_trust", clear_password="on"))
    assert Trunk.objects.get().password == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"address": "bad address!"}, "Enter an IP address or a host name"),
        ({"port": 70000}, "less than or equal to 65535"),
        ({"dids": "85550100 = 999"}, "This server has no local user 999."),
        ({"dids": "85550100"}, "Write each DID as number = user"),
        ({"dids": "1 = 100\n1 = 100"}, "Each DID may be listed once: 1."),
        ({"password": ""}, "A registering trunk needs a password."),
        ({"username": ""}, "A registering trunk needs a user name."),
    ],
)
def test_a_bad_trunk_is_refused_and_what_was_typed_is_kept(
    owner_client, tenant_a, changes, message
):
    response = owner_client.post(url("trunk-create", tenant_a.server), trunk_form(**changes))
    html = response.content.decode()
    assert response.status_code == 200 and message in html
    assert 'value="ITSP"' in html
    assert not Trunk.objects.exists()


def test_a_default_user_of_another_tenant_cannot_be_posted(owner_client, tenant_a, tenant_b):
    response = owner_client.post(
        url("trunk-create", tenant_a.server), trunk_form(default_user=tenant_b.user.pk)
    )
    assert response.status_code == 200 and not Trunk.objects.exists()


def test_a_trunk_used_by_rules_is_not_deleted_and_the_page_says_why(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    rule = make_rule(tenant_a.server, trunk=trunk)
    response = owner_client.post(url("trunk-delete", tenant_a.server, trunk.pk))
    assert response.status_code == 409
    assert "Dial-plan rules for 0 use trunk ITSP" in response.content.decode()
    trunk_services.dial_rule_delete(rule=rule)
    response = owner_client.post(url("trunk-delete", tenant_a.server, trunk.pk))
    assert response.status_code == 302 and not Trunk.objects.exists()


def test_an_owner_chooses_the_external_line(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    response = owner_client.post(url("trunk-list", tenant_a.server), {"external_line": trunk.pk})
    assert response.status_code == 302
    tenant_a.server.refresh_from_db()
    assert tenant_a.server.external_line == trunk
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "(external line)" in html
    owner_client.post(url("trunk-list", tenant_a.server), {"external_line": ""})
    tenant_a.server.refresh_from_db()
    assert tenant_a.server.external_line is None


def test_another_tenants_trunk_cannot_be_the_external_line(owner_client, tenant_a, tenant_b):
    other = make_trunk(tenant_b.server)
    response = owner_client.post(url("trunk-list", tenant_a.server), {"external_line": other.pk})
    assert response.status_code == 200
    tenant_a.server.refresh_from_db()
    assert tenant_a.server.external_line is None


def test_the_server_page_shows_the_trunk_state_on_the_tenants_clock(owner_client, tenant_a):
    tenant_a.tenant.time_zone = "Asia/Shanghai"
    tenant_a.tenant.save()
    trunk = make_trunk(tenant_a.server)
    attempt = datetime.datetime(2026, 9, 21, 10, 0, 0, tzinfo=datetime.UTC)
    Trunk.objects.filter(pk=trunk.pk).update(
        state=Trunk.State.FAILING,
        state_reason="401 wrong password",
        last_attempt_at=attempt,
        next_attempt_at=attempt + datetime.timedelta(seconds=60),
    )
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "Failing" in html and "401 wrong password" in html
    assert "last attempt 2026-09-21 18:00:00 Asia/Shanghai" in html
    assert "next attempt 2026-09-21 18:01:00 Asia/Shanghai" in html


def test_an_ip_trust_trunk_shows_no_registration_state(viewer_client, tenant_a):
    make_trunk(tenant_a.server, mode="ip_trust", username="", password="")
    html = viewer_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "IP trust: no registration" in html


def test_a_viewer_sees_trunks_and_rules_without_change_links(viewer_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    make_rule(tenant_a.server, trunk=trunk)
    html = viewer_client.get(url("trunk-list", tenant_a.server)).content.decode()
    assert "ITSP" in html and url("trunk-edit", tenant_a.server, trunk.pk) not in html
    assert url("trunk-create", tenant_a.server) not in html and PASSWORD not in html
    html = viewer_client.get(url("dial-rule-list", tenant_a.server)).content.decode()
    assert "trunk ITSP" in html and url("dial-rule-create", tenant_a.server) not in html


# ---- dial plan ---------------------------------------------------------------------------


def test_an_owner_adds_edits_and_deletes_a_rule(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    response = owner_client.post(url("dial-rule-create", tenant_a.server), rule_form(trunk))
    assert response.status_code == 302
    rule = DialRule.objects.get()
    assert (rule.prefix, rule.trunk, rule.strip) == ("0", trunk, 1)
    edit = url("dial-rule-edit", tenant_a.server, rule.pk)
    assert owner_client.post(edit, rule_form(trunk, add="00")).status_code == 302
    assert DialRule.objects.get().add == "00"
    html = owner_client.get(url("dial-rule-list", tenant_a.server)).content.decode()
    assert "trunk ITSP" in html
    owner_client.post(url("dial-rule-delete", tenant_a.server, rule.pk))
    assert not DialRule.objects.exists()


def test_a_rule_hiding_local_users_is_saved_only_once_confirmed(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    create = url("dial-rule-create", tenant_a.server)
    response = owner_client.post(create, rule_form(trunk, prefix="1"))
    html = response.content.decode()
    assert response.status_code == 200 and not DialRule.objects.exists()
    assert "1 local numbers begin with 1 (100)" in html
    assert 'type="checkbox" name="confirm"' in html
    response = owner_client.post(create, rule_form(trunk, prefix="1", confirm="on"))
    assert response.status_code == 302 and DialRule.objects.get().prefix == "1"


def test_a_rule_taking_the_out_group_prefix_is_saved_only_once_confirmed(owner_client, tenant_a):
    trunk = make_trunk(tenant_a.server)
    create = url("dial-rule-create", tenant_a.server)
    html = owner_client.post(create, rule_form(trunk, prefix="95")).content.decode()
    assert "9 is the out-group prefix" in html and not DialRule.objects.exists()
    owner_client.post(create, rule_form(trunk, prefix="95", confirm="on"))
    assert DialRule.objects.get().prefix == "95"


def test_a_rule_without_warnings_shows_no_confirm_box(owner_client, tenant_a):
    html = owner_client.get(url("dial-rule-create", tenant_a.server)).content.decode()
    assert 'type="checkbox" name="confirm"' not in html


def test_the_out_group_prefix_clashing_with_a_rule_needs_confirming(owner_client, tenant_a):
    server = tenant_a.server
    make_rule(server, "7", trunk=make_trunk(server))
    settings = {
        "name": server.name,
        "out_group_prefix": "7",
        "prompt_language": "en",
        "digest_algorithms": "md5",
    }
    response = owner_client.post(url("server-settings", server), settings)
    assert response.status_code == 200 and "Dial-plan rules for 7" in response.content.decode()
    server.refresh_from_db()
    assert server.out_group_prefix == "9"
    response = owner_client.post(url("server-settings", server), settings | {"confirm": "on"})
    assert response.status_code == 302
    server.refresh_from_db()
    assert server.out_group_prefix == "7"


def test_a_trunk_of_another_tenant_cannot_be_posted_in_a_rule(owner_client, tenant_a, tenant_b):
    other = make_trunk(tenant_b.server)
    response = owner_client.post(url("dial-rule-create", tenant_a.server), rule_form(other))
    assert response.status_code == 200 and not DialRule.objects.exists()


# ---- CSRF and Chinese ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["trunk-list", "trunk-create", "trunk-edit", "trunk-delete", "dial-rule-create"]
)
def test_the_trunk_pages_refuse_a_post_without_the_csrf_token(tenant_a, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_member(tenant_a.tenant, "owner"))
    trunk = make_trunk(tenant_a.server)
    args = [trunk.pk] if name in {"trunk-edit", "trunk-delete"} else []
    response = client.post(url(name, tenant_a.server, *args), trunk_form(name="Other"))
    assert response.status_code == 403
    assert list(Trunk.objects.values_list("name", flat=True)) == ["ITSP"]


@pytest.fixture
def chinese():
    yield {"HTTP_ACCEPT_LANGUAGE": "zh-CN"}
    translation.deactivate()


def test_the_trunk_pages_read_in_chinese(owner_client, tenant_a, chinese):
    make_trunk(tenant_a.server)
    html = owner_client.get(url("trunk-list", tenant_a.server), **chinese).content.decode()
    assert "中继" in html and "外线" in html
    html = owner_client.get(url("dial-rule-create", tenant_a.server), **chinese).content.decode()
    assert "前缀" in html
