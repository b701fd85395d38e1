"""A run killed (SIGKILL) in the middle, then run again: everything is purged once, and
at no moment is a server half-deleted."""

import signal
import subprocess

import pytest

from ops.models import ParkedServer, PurgeRun, Tombstone
from sipnodes.models import LocalUser, PortAllocation, VirtualServer
from tests.sipnodes.node_host import platform_env, state_of
from tests.support import PYTHON, ROOT, stop_process, wait_for, wait_until

from .conftest import WINDOW, make_zombie

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def assert_whole_or_gone(server_ids: list[int]) -> None:
    """Each server is either all there (row, users, ports) or gone with its tombstone."""
    for server_id in server_ids:
        if VirtualServer.objects.filter(pk=server_id).exists():
            assert LocalUser.objects.filter(server_id=server_id).exists()
            assert PortAllocation.objects.filter(server_id=server_id).count() == 22
            assert not Tombstone.objects.filter(server_id=server_id).exists()
        else:
            assert not LocalUser.objects.filter(server_id=server_id).exists()
            assert not PortAllocation.objects.filter(server_id=server_id).exists()
            assert Tombstone.objects.filter(server_id=server_id).count() == 1


def test_a_run_killed_mid_way_and_run_again_purges_each_zombie_once(node_host, short_tmp):
    zombies = [make_zombie(f"Kill {n}", registered=WINDOW + 10 + n) for n in range(6)]
    for server in zombies:
        wait_for(lambda s=server: state_of(s) == "running", 30, f"{server.name} to run")
    ids = [s.pk for s in zombies]
    # Two servers per batch: three rounds of stopping workers, each waiting on the agent.
    env = platform_env(short_tmp, SIPCLOUD_PURGE_STOP_BATCH="2", LANG="C.UTF-8")
    command = [PYTHON, "manage.py", "purge_zombies"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        # Killed once the first batch is purged, while it holds the second.
        wait_for(lambda: Tombstone.objects.count() >= 2, 60, "the first batch to be purged")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop_process(first)
    purged_before = Tombstone.objects.count()
    assert 2 <= purged_before < 6
    assert_whole_or_gone(ids)
    assert PurgeRun.objects.get().state == "running"  # as the killed process left it

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert again.returncode == 0, again.stderr
    assert f"{6 - purged_before} purged" in again.stdout
    assert_whole_or_gone(ids)
    assert not VirtualServer.objects.filter(pk__in=ids).exists()
    assert sorted(Tombstone.objects.values_list("server_id", flat=True)) == sorted(ids)
    assert not ParkedServer.objects.exists()
    states = dict(PurgeRun.objects.values_list("pk", "state"))
    assert sorted(states.values()) == ["finished", "interrupted"]
    assert wait_until(lambda: all(node_host.supervisor.info(f"vs-{i}") is None for i in ids), 10)
