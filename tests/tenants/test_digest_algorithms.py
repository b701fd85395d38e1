"""The digest algorithms setting in the portal: shown with what each choice means for
phones, changed by owners and admins of the server's tenant only."""

import pytest
from django.urls import reverse

from sipnodes.models import VirtualServer
from sipnodes.runtime_config import render_runtime_config
from tests.factories import make_member

Choice = VirtualServer.DigestAlgorithms


def settings_url(server: VirtualServer) -> str:
    return reverse("tenants:server-settings", args=[server.pk])


def settings_form(server: VirtualServer, **changes: str) -> dict[str, str]:
    """The settings form as the browser posts it unchanged, with `changes` applied."""
    data = {
        "name": server.name,
        "out_group_prefix": server.out_group_prefix,
        "prompt_language": server.prompt_language,
        "digest_algorithms": server.digest_algorithms,
    }
    for flag in ("media_relay", "upnp", "cdr_failed_calls", "cdr_realtime_display"):
        if getattr(server, flag):
            data[flag] = "on"
    return data | changes


def algorithms(server: VirtualServer) -> str:
    return VirtualServer.objects.get(pk=server.pk).digest_algorithms


def test_the_settings_page_shows_the_choices_and_which_phones_need_which(owner_client, tenant_a):
    html = owner_client.get(settings_url(tenant_a.server)).content.decode()
    for label in ("MD5 only", "SHA-256 and MD5", "SHA-256 only"):
        assert label in html
    assert 'name="digest_algorithms" value="md5"' in html
    assert html.count('name="digest_algorithms"') == 3
    checked = html.split('value="md5"', 1)[1].split(">", 1)[0]
    assert "checked" in checked  # MD5 only, the default
    for phone in ("baresip 1.0", "SIPp", "linphone", "pjsua"):
        assert phone in html
    assert "SHA-256 is offered first" in html


def test_the_server_page_shows_the_setting_to_a_viewer(viewer_client, tenant_a):
    html = viewer_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert '<td id="digest-algorithms">MD5 only</td>' in html


def test_an_owner_sets_sha256_only_and_the_worker_config_follows(
    owner_client, tenant_a, tmp_path, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            settings_url(server), settings_form(server, digest_algorithms=Choice.SHA256)
        )
    assert response.status_code == 302
    assert len(callbacks) == 1  # the apply_server task (a reload), sent once committed
    server = VirtualServer.objects.get(pk=server.pk)
    assert server.digest_algorithms == Choice.SHA256
    config = render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path)
    assert config["auth"] == {"algorithms": ["SHA-256"]}
    html = owner_client.get(server.get_absolute_url()).content.decode()
    assert '<td id="digest-algorithms">SHA-256 only</td>' in html


def test_a_choice_not_offered_is_refused(owner_client, tenant_a):
    server = tenant_a.server
    response = owner_client.post(
        settings_url(server), settings_form(server, digest_algorithms="SHA-512")
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert algorithms(server) == Choice.MD5


def test_a_viewer_cannot_change_the_algorithms(viewer_client, tenant_a):
    server = tenant_a.server
    response = viewer_client.post(
        settings_url(server), settings_form(server, digest_algorithms=Choice.SHA256)
    )
    assert response.status_code == 403
    assert algorithms(server) == Choice.MD5


@pytest.mark.parametrize("role", ["owner", "admin", "viewer"])
def test_a_member_of_another_tenant_cannot_see_or_change_them(client, tenant_a, tenant_b, role):
    client.force_login(make_member(tenant_a.tenant, role))
    other = tenant_b.server
    assert client.get(settings_url(other)).status_code == 404
    response = client.post(settings_url(other), settings_form(other, digest_algorithms="sha256"))
    assert response.status_code == 404
    assert algorithms(other) == Choice.MD5
