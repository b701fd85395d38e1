import re

from django.urls import reverse

from sipnodes.credentials import digest_ha1
from sipnodes.models import LocalUser, VirtualServer


def test_server_page_shows_address_ports_edition_state_and_clients(owner_client, tenant_a):
    server = tenant_a.server
    VirtualServer.objects.filter(pk=server.pk).update(registered_clients=2)
    html = owner_client.get(server.get_absolute_url()).content.decode()
    assert f"127.0.0.1:{server.sip_port}" in html
    assert f"{server.callback_port} (UDP)" in html
    assert f"{server.media_port_first}-{server.media_port_last}" in html
    assert "5 clients (free)" in html and "non-commercial" in html
    assert "2 of 5 clients registered" in html
    assert '<span id="server-state">Unknown</span> (wanted: running)' in html


def test_the_server_page_says_when_more_clients_are_registered_than_the_edition_allows(
    owner_client, tenant_a
):
    server = tenant_a.server
    VirtualServer.objects.filter(pk=server.pk).update(edition=10, registered_clients=12)
    html = owner_client.get(server.get_absolute_url()).content.decode()
    assert "12 of 10 clients registered" in html
    assert re.search(r'id="over-limit">[^<]*no new client can register until fewer than 10', html)

    VirtualServer.objects.filter(pk=server.pk).update(registered_clients=10)
    html = owner_client.get(server.get_absolute_url()).content.decode()
    assert "10 of 10 clients registered" in html and "over-limit" not in html


def test_owner_edits_system_settings(owner_client, tenant_a):
    url = reverse("tenants:server-settings", args=[tenant_a.server.pk])
    response = owner_client.post(
        url,
        {
            "name": "Front desk",
            "out_group_prefix": "0",
            "prompt_language": "zh",
            "media_relay": "",
            "upnp": "on",
            "cdr_failed_calls": "",
            "cdr_realtime_display": "on",
            "digest_algorithms": "md5",
        },
    )
    assert response.status_code == 302
    server = VirtualServer.objects.get(pk=tenant_a.server.pk)
    assert (server.name, server.out_group_prefix, server.prompt_language) == (
        "Front desk",
        "0",
        "zh",
    )
    assert (server.media_relay, server.upnp) == (False, True)
    assert (server.cdr_failed_calls, server.cdr_realtime_display) == (False, True)


def test_bad_settings_get_a_message_and_change_nothing(owner_client, tenant_a):
    url = reverse("tenants:server-settings", args=[tenant_a.server.pk])
    response = owner_client.post(
        url, {"name": "x", "out_group_prefix": "9a", "prompt_language": "fr"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Use digits only." in html and "Select a valid choice" in html
    assert VirtualServer.objects.get(pk=tenant_a.server.pk).out_group_prefix == "9"


def test_admin_creates_a_user_whose_password_is_shown_once(client, tenant_a):
    from tests.factories import make_member

    client.force_login(make_member(tenant_a.tenant, "admin"))
    server = tenant_a.server
    url = reverse("tenants:user-create", args=[server.pk])
    response = client.post(url, {"number": "200", "display_name": "Sales", "call_level": 3})
    password = re.search(r'id="issued-password">([^<]+)<', response.content.decode()).group(1)
    user = LocalUser.objects.get(server=server, number="200")
    assert (user.display_name, user.call_level) == ("Sales", 3)
    assert (user.ha1_md5, user.ha1_sha256) == digest_ha1("200", server.realm, password)
    assert password not in client.get(server.get_absolute_url()).content.decode()


def test_duplicate_or_bad_numbers_are_refused(owner_client, tenant_a):
    url = reverse("tenants:user-create", args=[tenant_a.server.pk])
    html = owner_client.post(url, {"number": "100", "call_level": 1}).content.decode()
    assert "User 100 already exists on this server." in html
    html = owner_client.post(url, {"number": "12ab", "call_level": 1}).content.decode()
    assert "Use digits only." in html
    html = owner_client.post(url, {"number": "300", "call_level": 12}).content.decode()
    assert "less than or equal to 9" in html
    assert LocalUser.objects.filter(server=tenant_a.server).count() == 1


def test_edit_reset_and_delete_a_user(owner_client, tenant_a):
    server, user = tenant_a.server, tenant_a.user
    edit = reverse("tenants:user-edit", args=[server.pk, user.pk])
    owner_client.post(edit, {"number": "999", "display_name": "Lobby", "call_level": 0})
    user.refresh_from_db()
    assert (user.number, user.display_name, user.call_level) == ("100", "Lobby", 0)

    old = user.ha1_md5
    reset = reverse("tenants:user-reset-password", args=[server.pk, user.pk])
    html = owner_client.post(reset).content.decode()
    password = re.search(r'id="issued-password">([^<]+)<', html).group(1)
    user.refresh_from_db()
    assert user.ha1_md5 != old
    assert user.ha1_md5 == digest_ha1("100", server.realm, password)[0]

    assert (
        owner_client.get(reverse("tenants:user-delete", args=[server.pk, user.pk])).status_code
        == 405
    )
    owner_client.post(reverse("tenants:user-delete", args=[server.pk, user.pk]))
    assert not LocalUser.objects.filter(pk=user.pk).exists()


def test_callback_page_warns_about_a_blank_address_and_explains_port_zero(owner_client, tenant_a):
    url = reverse("tenants:server-callback", args=[tenant_a.server.pk])
    html = owner_client.get(url).content.decode()
    assert "0 closes the call-back service" in html
    assert 'id="open-callback-warning"' not in html

    response = owner_client.post(
        url, {"app_server_address": "", "port": 0, "default_caller": "8000"}
    )
    assert response.status_code == 302
    html = owner_client.get(url).content.decode()
    assert 'id="open-callback-warning"' in html
    assert "from <em>any</em> address" in html
    server = VirtualServer.objects.get(pk=tenant_a.server.pk)
    assert (server.callback_port, server.callback_default_caller) == (0, "8000")
    assert "closed" in owner_client.get(server.get_absolute_url()).content.decode()


def test_callback_port_outside_the_range_is_refused(owner_client, tenant_a):
    url = reverse("tenants:server-callback", args=[tenant_a.server.pk])
    html = owner_client.post(
        url, {"app_server_address": "10.1.1.1", "port": 5060, "default_caller": ""}
    ).content.decode()
    assert "choose a port in 16000-16999" in html
    server = VirtualServer.objects.get(pk=tenant_a.server.pk)
    assert server.callback_app_server_address == "127.0.0.1"


def post_callback(client, server, **values):
    data = {"app_server_address": "127.0.0.1", "port": server.callback_port, "default_caller": ""}
    url = reverse("tenants:server-callback", args=[server.pk])
    return client.post(url, {**data, **values})


def test_a_generated_callback_secret_is_shown_once_then_masked(owner_client, tenant_a):
    server = tenant_a.server
    url = reverse("tenants:server-callback", args=[server.pk])
    html = owner_client.get(url).content.decode()
    assert "Shared secret: none" in html and "Remove the secret" not in html

    html = post_callback(owner_client, server, secret_action="generate").content.decode()
    secret = re.search(r'id="issued-secret">([0-9a-f]{64})<', html).group(1)
    server.refresh_from_db()
    assert server.callback_secret == secret

    html = owner_client.get(url).content.decode()
    assert secret not in html and "it is not shown again" in html
    assert "Keep the current secret" in html and "Remove the secret" in html
    post_callback(owner_client, server, default_caller="8000")  # no choice: kept
    server.refresh_from_db()
    assert (server.callback_secret, server.callback_default_caller) == (secret, "8000")

    assert post_callback(owner_client, server, secret_action="clear").status_code == 302
    server.refresh_from_db()
    assert server.callback_secret == ""


def test_a_pasted_callback_secret_is_checked_and_never_shown_back(owner_client, tenant_a):
    server = tenant_a.server
    pasted = "My-AS-secret-0123456789"
    html = post_callback(
        owner_client, server, secret_action="paste", new_secret=pasted, port=5060
    ).content.decode()
    assert "choose a port in 16000-16999" in html and pasted not in html
    html = post_callback(owner_client, server, secret_action="paste").content.decode()
    assert "Enter the secret to use" in html
    html = post_callback(
        owner_client, server, secret_action="paste", new_secret="short one"
    ).content.decode()
    assert "Use 16 to 128 letters" in html
    server.refresh_from_db()
    assert server.callback_secret == ""

    response = post_callback(owner_client, server, secret_action="paste", new_secret=pasted)
    assert response.status_code == 302
    server.refresh_from_db()
    assert server.callback_secret == pasted


def test_the_application_server_address_must_be_an_ip_address(owner_client, tenant_a):
    server = tenant_a.server
    html = post_callback(owner_client, server, app_server_address="as.example.com").content.decode()
    assert "Enter a valid IPv4 or IPv6 address" in html
    assert post_callback(owner_client, server, app_server_address="2001:db8::5").status_code == 302
    server.refresh_from_db()
    assert server.callback_app_server_address == "2001:db8::5"
