"""The call feature pages: a user's call settings, hunt groups and feature codes.

Who may reach them (members of the server's tenant only, viewers read only) is tested
for every URL in tests/tenants/test_isolation.py; here, what the pages do.
"""

import dataclasses

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from sipnodes import features_services, services
from sipnodes.engine.config import FeatureCodes
from sipnodes.models import FeatureCode, HuntGroup, LocalUser, VirtualServer
from tests.factories import make_member


def call_settings_url(user: LocalUser) -> str:
    return reverse("tenants:user-call-settings", args=[user.server_id, user.pk])


def call_settings_form(user: LocalUser, **changes: object) -> dict[str, object]:
    """The call settings form as the browser posts it unchanged, with `changes`."""
    user.refresh_from_db()
    changed = user.call_settings_changed
    data: dict[str, object] = {
        "forward_unconditional": user.forward_unconditional,
        "forward_busy": user.forward_busy,
        "forward_no_answer": user.forward_no_answer,
        "forward_unreachable": user.forward_unreachable,
        "no_answer_seconds": user.no_answer_seconds,
        "pickup_group": user.pickup_group,
        "seen_changed": changed.isoformat() if changed else "",
    }
    if user.dnd:
        data["dnd"] = "on"
    return data | changes


def hunt_group_form(**changes: object) -> dict[str, object]:
    data = {
        "number": "600",
        "name": "Sales",
        "mode": "sequential",
        "members": "201, 100",
        "ring_seconds": 15,
        "timeout": 60,
        "overflow": "",
    }
    return data | changes


def codes_form(**changes: str) -> dict[str, str]:
    return dataclasses.asdict(FeatureCodes()) | changes


@pytest.fixture
def sales(tenant_a) -> LocalUser:
    return services.local_user_create(server=tenant_a.server, number="201", display_name="Ann")[0]


# ---- the server page ---------------------------------------------------------------


def test_the_server_page_links_the_feature_pages_and_shows_call_settings(owner_client, tenant_a):
    user = tenant_a.user
    user.dnd, user.forward_busy, user.pickup_group = True, "101", 3
    user.save()
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    for name in ("hunt-group-list", "feature-codes"):
        assert reverse(f"tenants:{name}", args=[tenant_a.server.pk]) in html
    assert call_settings_url(user) in html
    assert "do not disturb; when busy to 101; pickup group 3" in html


def test_a_viewer_sees_call_settings_but_no_link_to_change_them(viewer_client, tenant_a):
    html = viewer_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "no DND, no forwarding" in html
    assert call_settings_url(tenant_a.user) not in html


# ---- call settings -----------------------------------------------------------------


def test_an_owner_sets_dnd_and_forwarding(
    owner_client, tenant_a, django_capture_on_commit_callbacks
):
    user = tenant_a.user
    html = owner_client.get(call_settings_url(user)).content.decode()
    assert 'name="forward_no_answer"' in html and 'name="pickup_group"' in html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            call_settings_url(user),
            call_settings_form(user, dnd="on", forward_no_answer="201", no_answer_seconds=30),
        )
    assert response.status_code == 302 and response.url == tenant_a.server.get_absolute_url()
    assert len(callbacks) == 1
    user.refresh_from_db()
    assert (user.dnd, user.forward_no_answer, user.no_answer_seconds) == (True, "201", 30)
    assert user.call_settings_changed is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"forward_busy": "20-1"}, "Use digits only."),
        ({"forward_unconditional": "100"}, "Not the user&#x27;s own number."),
        ({"no_answer_seconds": 3}, "greater than or equal to 5"),
        ({"pickup_group": 100}, "less than or equal to 99"),
    ],
)
def test_bad_call_settings_are_refused_and_what_was_typed_is_kept(
    owner_client, tenant_a, changes, message
):
    user = tenant_a.user
    data = call_settings_form(user, forward_no_answer="201", **changes)
    response = owner_client.post(call_settings_url(user), data)
    html = response.content.decode()
    assert response.status_code == 200 and message in html
    assert 'value="201"' in html  # the valid field typed is still there
    assert LocalUser.objects.get(pk=user.pk).forward_no_answer == ""


def test_a_change_made_from_a_phone_meanwhile_is_shown_not_undone(owner_client, tenant_a):
    user = tenant_a.user
    opened = call_settings_form(user)  # the page as it was opened
    features_services.local_user_update_call_settings(
        user=user,
        seen_changed=None,
        **{name: getattr(user, name) for name in features_services.CALL_SETTINGS} | {"dnd": True},
    )  # then the user dialled *78

    response = owner_client.post(call_settings_url(user), opened | {"forward_busy": "201"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "changed while this page was open" in html and "In force now: do not disturb" in html
    assert 'value="201"' in html
    assert LocalUser.objects.get(pk=user.pk).dnd is True

    # Saving again, from the page now shown, puts the typed settings in place.
    resubmit = opened | {"forward_busy": "201"}
    resubmit["seen_changed"] = response.context["form"]["seen_changed"].value()
    assert owner_client.post(call_settings_url(user), resubmit).status_code == 302
    user.refresh_from_db()
    assert (user.dnd, user.forward_busy) == (False, "201")


# ---- hunt groups -------------------------------------------------------------------


def hunt_groups_url(server: VirtualServer, name: str = "hunt-group-list", *args: int) -> str:
    return reverse(f"tenants:{name}", args=[server.pk, *args])


def test_an_owner_creates_a_hunt_group_and_sees_it_listed(
    owner_client, tenant_a, sales, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    form_html = owner_client.get(hunt_groups_url(server, "hunt-group-create")).content.decode()
    assert "201 (Ann)" in form_html and 'name="mode"' in form_html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            hunt_groups_url(server, "hunt-group-create"), hunt_group_form()
        )
    assert response.status_code == 302 and response.url == hunt_groups_url(server)
    assert len(callbacks) == 1
    group = HuntGroup.objects.get()
    assert list(group.members.values_list("user__number", flat=True)) == ["201", "100"]
    html = owner_client.get(hunt_groups_url(server)).content.decode()
    assert "Sales" in html and "201, 100" in html and "Sequential" in html


def test_an_owner_edits_and_deletes_a_hunt_group(owner_client, tenant_a, sales):
    server = tenant_a.server
    group = features_services.hunt_group_create(
        server=server, number="600", name="Sales", mode="simultaneous", members=[sales]
    )
    edit = hunt_groups_url(server, "hunt-group-edit", group.pk)
    html = owner_client.get(edit).content.decode()
    assert 'value="201"' in html  # the members, in order
    response = owner_client.post(edit, hunt_group_form(members="100 201", mode="round_robin"))
    assert response.status_code == 302
    group.refresh_from_db()
    assert group.mode == "round_robin"
    assert list(group.members.values_list("user__number", flat=True)) == ["100", "201"]

    assert (
        owner_client.post(hunt_groups_url(server, "hunt-group-delete", group.pk)).status_code == 302
    )
    assert not HuntGroup.objects.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"number": "201"}, "201 is already the number of a local user."),
        ({"number": "6x"}, "Use digits only."),
        ({"members": "201 999"}, "This server has no local user 999."),
        ({"members": "201 100 201"}, "201 is listed more than once."),
        ({"members": ""}, "This field is required."),
        ({"overflow": "600"}, "Not the group&#x27;s own number."),
        ({"mode": "random"}, "Select a valid choice."),
        ({"timeout": 4}, "greater than or equal to 5"),
    ],
)
def test_a_bad_hunt_group_is_refused_and_what_was_typed_is_kept(
    owner_client, tenant_a, sales, changes, message
):
    data = hunt_group_form(name="Typed name", **changes)
    response = owner_client.post(hunt_groups_url(tenant_a.server, "hunt-group-create"), data)
    html = response.content.decode()
    assert response.status_code == 200 and message in html
    assert 'value="Typed name"' in html
    assert not HuntGroup.objects.exists()


def test_a_member_of_another_server_cannot_be_posted(owner_client, tenant_a, tenant_b):
    services.local_user_create(server=tenant_b.server, number="777")
    response = owner_client.post(
        hunt_groups_url(tenant_a.server, "hunt-group-create"), hunt_group_form(members="100 777")
    )
    assert response.status_code == 200 and "This server has no local user 777." in (
        response.content.decode()
    )
    assert not HuntGroup.objects.exists()


def test_a_group_of_another_tenant_is_not_reached_through_ones_own_server(
    owner_client, tenant_a, tenant_b
):
    theirs = features_services.hunt_group_create(
        server=tenant_b.server, number="600", name="B", mode="simultaneous", members=[tenant_b.user]
    )
    for name in ("hunt-group-edit", "hunt-group-delete"):
        url = hunt_groups_url(tenant_a.server, name, theirs.pk)
        assert owner_client.post(url, hunt_group_form()).status_code == 404
    assert HuntGroup.objects.get().name == "B"


def test_a_new_user_cannot_take_a_hunt_groups_number(owner_client, tenant_a):
    features_services.hunt_group_create(
        server=tenant_a.server, number="600", name="Sales", mode="simultaneous",
        members=[tenant_a.user],
    )  # fmt: skip
    response = owner_client.post(
        reverse("tenants:user-create", args=[tenant_a.server.pk]),
        {"number": "600", "display_name": "Bob", "call_level": 1},
    )
    assert "600 is already the number of hunt group Sales." in response.content.decode()
    assert not LocalUser.objects.filter(number="600").exists()


# ---- feature codes -----------------------------------------------------------------


def codes_url(server: VirtualServer) -> str:
    return reverse("tenants:feature-codes", args=[server.pk])


def test_the_feature_codes_page_lists_every_feature_in_words(viewer_client, tenant_a):
    html = viewer_client.get(codes_url(tenant_a.server)).content.decode()
    for words in (
        "Forward all calls",
        "Dial *90*number to set it (for example *90*202), *90# to stop it.",
        "Do not disturb on",
        "Group pickup",
        "Dial ** followed by a number (for example **201)",
    ):
        assert words in html
    assert "<input" not in html.split('id="feature-codes"')[1]  # a viewer only reads


def test_an_owner_renames_a_code_and_resets_them_all(
    owner_client, tenant_a, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(codes_url(server), codes_form(dnd_on="*55"))
    assert response.status_code == 302 and len(callbacks) == 1
    assert list(FeatureCode.objects.values_list("feature", "code")) == [("dnd_on", "*55")]
    html = owner_client.get(codes_url(server)).content.decode()
    assert 'value="*55"' in html and "Dial *55: your phones stop ringing" in html

    assert owner_client.post(codes_url(server), {"reset": "1"}).status_code == 302
    assert not FeatureCode.objects.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dnd_on": "*90"}, "Code *90 is given to two features."),
        ({"dnd_on": "*9"}, "*90, another feature&#x27;s code, begins with *9:"),
        ({"dnd_on": "78"}, "Start with * or #"),
        ({"dnd_on": ""}, "This field is required."),
    ],
)
def test_codes_phones_could_not_use_are_refused_and_what_was_typed_is_kept(
    owner_client, tenant_a, changes, message
):
    response = owner_client.post(codes_url(tenant_a.server), codes_form(dnd_off="*77", **changes))
    html = response.content.decode()
    assert response.status_code == 200 and message in html
    assert 'value="*77"' in html
    assert not FeatureCode.objects.exists()


# ---- CSRF ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["user-call-settings", "hunt-group-create", "hunt-group-delete", "feature-codes"]
)
def test_the_feature_pages_refuse_a_post_without_the_csrf_token(tenant_a, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_member(tenant_a.tenant, "owner"))
    group = features_services.hunt_group_create(
        server=tenant_a.server, number="600", name="S", mode="simultaneous",
        members=[tenant_a.user],
    )  # fmt: skip
    args = {
        "user-call-settings": [tenant_a.server.pk, tenant_a.user.pk],
        "hunt-group-create": [tenant_a.server.pk],
        "hunt-group-delete": [tenant_a.server.pk, group.pk],
        "feature-codes": [tenant_a.server.pk],
    }[name]
    response = client.post(reverse(f"tenants:{name}", args=args), {"reset": "1"})
    assert response.status_code == 403
    assert HuntGroup.objects.count() == 1


@pytest.fixture
def chinese():
    """The headers of a Chinese browser; the language its requests activate in this
    thread is deactivated after, as later tests expect the default."""
    yield {"HTTP_ACCEPT_LANGUAGE": "zh-CN"}
    translation.deactivate()


def test_the_feature_pages_read_in_chinese(owner_client, tenant_a, chinese):
    html = owner_client.get(codes_url(tenant_a.server), **chinese).content.decode()
    assert "无条件转移" in html and "拨 *90*号码 设置（例如 *90*202），拨 *90# 取消。" in html
    response = owner_client.get(hunt_groups_url(tenant_a.server, "hunt-group-create"), **chinese)
    assert "同时振铃：所有成员一起振铃" in response.content.decode()
    html = owner_client.get(call_settings_url(tenant_a.user), **chinese).content.decode()
    assert "遇忙转移到" in html and "代答组" in html
