"""Call features in the control plane: users' call settings, hunt groups, feature codes.

Every change is handed to the worker once committed (one `apply_server` task, as for
any other change); what the worker then reads is in tests/sipnodes/test_runtime_config.py.
"""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from sipnodes import features_selectors, features_services, services
from sipnodes.engine.config import FEATURES, HUNT_MODES, FeatureCodes
from sipnodes.feature_texts import FEATURE_TEXTS
from sipnodes.models import FeatureCode, HuntGroup, HuntGroupMember, LocalUser

DEFAULTS = FeatureCodes()


def settings(user: LocalUser, **changes: object) -> dict[str, object]:
    """The user's call settings as they are, with `changes`."""
    values = {name: getattr(user, name) for name in features_services.CALL_SETTINGS}
    return values | changes


def update_settings(user: LocalUser, **changes: object) -> LocalUser:
    user.refresh_from_db()
    return features_services.local_user_update_call_settings(
        user=user, seen_changed=user.call_settings_changed, **settings(user, **changes)
    )


def make_group(server, number="600", members=(), **values):
    return features_services.hunt_group_create(
        server=server,
        number=number,
        name=values.pop("name", "Sales"),
        mode=values.pop("mode", "simultaneous"),
        members=list(members),
        **values,
    )


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return set(exc.value.error_dict)


# ---- one list of features and modes, the engine's ------------------------------------


def test_every_feature_of_the_engine_has_a_name_and_an_explanation():
    assert set(FEATURE_TEXTS) == set(FEATURES)
    for name, how in FEATURE_TEXTS.values():
        assert str(name) and "%(code)s" in str(how)


def test_the_hunt_group_modes_are_the_engines():
    assert tuple(HuntGroup.Mode.values) == HUNT_MODES


# ---- call settings -----------------------------------------------------------------


def test_call_settings_are_saved_dated_and_sent_to_the_worker(
    tenant_a, django_capture_on_commit_callbacks
):
    user = tenant_a.user
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        update_settings(
            user, dnd=True, forward_busy="101", forward_no_answer="102", no_answer_seconds=30
        )
    assert len(callbacks) == 1  # apply_server: the worker reloads its config
    user.refresh_from_db()
    assert (user.dnd, user.forward_busy, user.forward_no_answer) == (True, "101", "102")
    assert (user.forward_unconditional, user.no_answer_seconds) == ("", 30)
    assert user.call_settings_changed >= before


def test_a_change_of_pickup_group_or_ring_time_alone_is_not_dated(tenant_a):
    """Else an old DND state would look newer than a phone's change not yet ingested."""
    user = update_settings(tenant_a.user, dnd=True)
    dated = user.call_settings_changed
    user = update_settings(user, pickup_group=3, no_answer_seconds=45)
    user.refresh_from_db()
    assert (user.pickup_group, user.no_answer_seconds) == (3, 45)
    assert user.call_settings_changed == dated


def test_saving_over_a_change_made_meanwhile_is_refused(tenant_a):
    user = tenant_a.user
    opened = user.call_settings_changed  # the page was opened: never changed
    update_settings(user, dnd=True)  # then a phone dialled *78
    with pytest.raises(features_services.CallSettingsChangedMeanwhile):
        features_services.local_user_update_call_settings(
            user=user, seen_changed=opened, **settings(user, dnd=False)
        )
    user.refresh_from_db()
    assert user.dnd is True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"forward_unconditional": "20x"}, "forward_unconditional"),
        ({"forward_busy": "100"}, "forward_busy"),  # the user's own number
        ({"no_answer_seconds": 4}, "no_answer_seconds"),
        ({"no_answer_seconds": 301}, "no_answer_seconds"),
        ({"pickup_group": 100}, "pickup_group"),
    ],
)
def test_bad_call_settings_are_refused_naming_the_field(tenant_a, changes, field):
    with pytest.raises(ValidationError) as exc:
        update_settings(tenant_a.user, **changes)
    assert error_fields(exc) == {field}
    assert LocalUser.objects.get(pk=tenant_a.user.pk).call_settings_changed is None


def test_the_summary_says_dnd_and_forwarding_in_words(tenant_a):
    user = tenant_a.user
    assert features_selectors.call_settings_summary(user=user) == "no DND, no forwarding"
    user = update_settings(user, dnd=True, forward_unconditional="101", forward_unreachable="9")
    assert features_selectors.call_settings_summary(user=user) == (
        "do not disturb; all calls to 101; when unreachable to 9"
    )


# ---- hunt groups -------------------------------------------------------------------


@pytest.fixture
def users(tenant_a) -> list[LocalUser]:
    server = tenant_a.server
    return [tenant_a.user] + [
        services.local_user_create(server=server, number=n)[0] for n in ("201", "202")
    ]


def test_a_hunt_group_keeps_its_members_in_ring_order(
    tenant_a, users, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        group = make_group(
            tenant_a.server, members=[users[2], users[0]], mode="sequential", overflow="201"
        )
    assert len(callbacks) == 1
    [read] = features_selectors.server_hunt_groups(server=tenant_a.server)
    assert features_selectors.hunt_group_member_numbers(group=read) == ["202", "100"]

    features_services.hunt_group_update(
        group=group, members=[users[1], users[2], users[0]], number="601", name="Support",
        mode="round_robin", ring_seconds=10, timeout=90, overflow="",
    )  # fmt: skip
    [read] = features_selectors.server_hunt_groups(server=tenant_a.server)
    assert (read.number, read.name, read.mode, read.ring_seconds, read.timeout) == (
        "601", "Support", "round_robin", 10, 90,
    )  # fmt: skip
    assert features_selectors.hunt_group_member_numbers(group=read) == ["201", "202", "100"]


def test_a_hunt_group_cannot_take_a_users_number_nor_a_user_a_groups(tenant_a, users):
    with pytest.raises(ValidationError) as exc:
        make_group(tenant_a.server, number="201", members=users)
    assert error_fields(exc) == {"number"}
    assert "already the number of a local user" in str(exc.value)

    make_group(tenant_a.server, number="600", members=users)
    with pytest.raises(ValidationError) as exc:
        services.local_user_create(server=tenant_a.server, number="600")
    assert "hunt group Sales" in str(exc.value)
    with pytest.raises(ValidationError):
        make_group(tenant_a.server, number="600", name="Again", members=users)
    assert not LocalUser.objects.filter(number="600").exists()


def test_another_server_may_use_the_same_numbers(tenant_a, tenant_b, users):
    make_group(tenant_a.server, number="600", members=users)
    make_group(tenant_b.server, number="600", members=[tenant_b.user])
    services.local_user_create(server=tenant_b.server, number="201")


def test_a_member_of_another_server_is_refused(tenant_a, tenant_b):
    with pytest.raises(ValidationError) as exc:
        make_group(tenant_a.server, members=[tenant_a.user, tenant_b.user])
    assert error_fields(exc) == {"members"}
    assert not HuntGroup.objects.exists()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"members": []}, "members"),
        ({"number": "6a0"}, "number"),
        ({"overflow": "600"}, "overflow"),
        ({"overflow": "+1"}, "overflow"),
        ({"mode": "random"}, "mode"),
        ({"ring_seconds": 4}, "ring_seconds"),
        ({"timeout": 3601}, "timeout"),
    ],
)
def test_a_bad_hunt_group_is_refused_naming_the_field(tenant_a, values, field):
    values = {"members": [tenant_a.user]} | values
    with pytest.raises(ValidationError) as exc:
        make_group(tenant_a.server, **values)
    assert field in error_fields(exc)
    assert not HuntGroup.objects.exists()


def test_a_deleted_user_leaves_its_groups_and_a_deleted_group_frees_its_number(tenant_a, users):
    group = make_group(tenant_a.server, members=users)
    services.local_user_delete(user=users[1])
    assert list(group.members.values_list("user__number", flat=True)) == ["100", "202"]
    features_services.hunt_group_delete(group=group)
    assert not HuntGroupMember.objects.exists()
    services.local_user_create(server=tenant_a.server, number="600")


# ---- feature codes -----------------------------------------------------------------


def test_the_codes_are_the_engines_defaults_until_renamed(tenant_a):
    assert features_selectors.server_feature_codes(server=tenant_a.server) == DEFAULTS
    rows = features_selectors.feature_code_rows(server=tenant_a.server)
    assert [row.feature for row in rows] == list(FEATURES)
    forward = rows[0]
    assert (forward.code, forward.default, forward.renamed) == ("*90", "*90", False)
    assert "*90*202" in forward.how and "*90#" in forward.how


def test_only_renamed_codes_are_stored_and_a_reset_brings_the_defaults_back(
    tenant_a, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        codes = features_services.feature_codes_rename(
            server=server, codes={"dnd_on": "*55", "dnd_off": "*79"}
        )
    assert len(callbacks) == 1
    assert (codes.dnd_on, codes.dnd_off, codes.forward_busy) == ("*55", "*79", "*91")
    assert list(FeatureCode.objects.values_list("feature", "code")) == [("dnd_on", "*55")]
    assert features_selectors.server_feature_codes(server=server).dnd_on == "*55"

    features_services.feature_codes_rename(server=server, codes={"dnd_on": "*78"})
    assert not FeatureCode.objects.exists()  # the default again: follows the engine's

    features_services.feature_codes_rename(server=server, codes={"group_pickup": "#8"})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        features_services.feature_codes_reset(server=server)
    assert len(callbacks) == 1
    assert features_selectors.server_feature_codes(server=server) == DEFAULTS


def test_two_features_may_swap_codes(tenant_a):
    codes = features_services.feature_codes_rename(
        server=tenant_a.server, codes={"dnd_on": "*79", "dnd_off": "*78"}
    )
    assert (codes.dnd_on, codes.dnd_off) == ("*79", "*78")


@pytest.mark.parametrize(
    ("codes", "fields"),
    [
        ({"dnd_on": "*90"}, {"dnd_on", "forward_unconditional"}),  # shared
        ({"dnd_on": "*9"}, {"dnd_on"}),  # *90 begins with it
        ({"dnd_on": "78"}, {"dnd_on"}),  # could be a number
        ({"dnd_on": "#"}, {"dnd_on"}),  # too short: the worker would refuse its config
        ({"dnd_on": "*7a"}, {"dnd_on"}),
        ({"dnd_on": ""}, {"dnd_on"}),
        ({"dnd_on": "*" * 17}, {"dnd_on"}),
    ],
)
def test_a_code_that_phones_could_not_use_is_refused(tenant_a, codes, fields):
    with pytest.raises(ValidationError) as exc:
        features_services.feature_codes_rename(server=tenant_a.server, codes=codes)
    assert error_fields(exc) == fields
    assert not FeatureCode.objects.exists()


def test_a_feature_the_engine_does_not_have_is_refused(tenant_a):
    with pytest.raises(ValueError, match="no such feature: park"):
        features_services.feature_codes_rename(server=tenant_a.server, codes={"park": "*70"})


def test_a_stored_feature_the_engine_no_longer_has_is_ignored(tenant_a):
    FeatureCode.objects.create(server=tenant_a.server, feature="retired", code="*44")
    assert features_selectors.server_feature_codes(server=tenant_a.server) == DEFAULTS


# ---- the migration -------------------------------------------------------------------

BEFORE = [("sipnodes", "0006_cdr_pages")]
AFTER = [("sipnodes", "0007_call_features")]


@pytest.mark.django_db(transaction=True)
def test_existing_users_get_no_call_features_and_can_be_migrated_back(tenant_a):
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(AFTER)
        features_services.hunt_group_create(
            server=tenant_a.server,
            number="600",
            name="Sales",
            mode="simultaneous",
            members=[tenant_a.user],
        )
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)  # backwards, with a hunt group: its tables just go
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps.get_model("sipnodes", "LocalUser")
        user = new.objects.get(pk=tenant_a.user.pk)
        assert (user.dnd, user.forward_unconditional, user.forward_busy) == (False, "", "")
        assert (user.no_answer_seconds, user.pickup_group, user.call_settings_changed) == (
            20,
            0,
            None,
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())  # every app: ops depends on sipnodes
