"""The per-server digest algorithms setting: rendered into `auth.algorithms`, applied by a
reload, never a restart."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from sipnodes import services
from sipnodes.engine.config import parse_config
from sipnodes.models import VirtualServer
from sipnodes.runtime_config import needs_restart, render_runtime_config

from .test_provisioning import queued

Choice = VirtualServer.DigestAlgorithms
MIGRATION = "0003_virtualserver_digest_algorithms"


def rendered(server: VirtualServer, tmp_path) -> dict:
    return render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path)


def test_a_new_server_offers_md5_only(tenant_a, tmp_path):
    """MD5 only is the one choice every phone we test with registers with (baresip 1.0)."""
    assert tenant_a.server.digest_algorithms == Choice.MD5
    assert rendered(tenant_a.server, tmp_path)["auth"] == {"algorithms": ["MD5"]}


@pytest.mark.parametrize(
    ("choice", "algorithms"),
    [
        (Choice.MD5, ("MD5",)),
        (Choice.SHA256_MD5, ("SHA-256", "MD5")),
        (Choice.SHA256, ("SHA-256",)),
    ],
)
def test_each_choice_reaches_the_engine_in_its_order(tenant_a, tmp_path, choice, algorithms):
    services.server_update_settings(server=tenant_a.server, digest_algorithms=choice)
    server = VirtualServer.objects.get(pk=tenant_a.server.pk)
    assert parse_config(rendered(server, tmp_path)).auth.algorithms == algorithms


def test_a_change_of_algorithms_is_a_reload_not_a_restart(
    tenant_a, tmp_path, broker, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    old = rendered(server, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        services.server_update_settings(server=server, digest_algorithms=Choice.SHA256)
    new = rendered(VirtualServer.objects.get(pk=server.pk), tmp_path)
    assert new["auth"] != old["auth"]
    assert not needs_restart(old, new)
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server.pk}]")]


def test_an_unknown_choice_is_refused_and_sends_nothing(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValueError):
        services.server_update_settings(server=tenant_a.server, digest_algorithms="SHA-512")
    assert VirtualServer.objects.get(pk=tenant_a.server.pk).digest_algorithms == Choice.MD5
    assert queued(broker) == []


@pytest.mark.django_db(transaction=True)
def test_servers_made_before_the_setting_get_md5_only(tenant_a):
    executor = MigrationExecutor(connection)
    before, after = [("sipnodes", "0002_cdr_and_worker_state")], [("sipnodes", MIGRATION)]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("sipnodes", "VirtualServer")
    assert not hasattr(old.objects.get(pk=tenant_a.server.pk), "digest_algorithms")
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps.get_model("sipnodes", "VirtualServer")
    assert new.objects.get(pk=tenant_a.server.pk).digest_algorithms == Choice.MD5
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # every app, as the next tests expect
