"""An operator runs the purge from its page: a dry run, then a real run, each queued to a
real Celery worker, against a real SIP host whose workers the run stops."""

import subprocess
from collections.abc import Iterator

import pytest

from ops.models import PurgeRun, Tombstone
from sipnodes.models import VirtualServer
from tenants.models import User
from tests.ops.conftest import make_zombie
from tests.second_factor import authenticator_of, current_code
from tests.sipnodes.node_host import NodeHost, make_node_host, platform_env, state_of
from tests.support import PYTHON, ROOT, stop_process, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "operator secret 42"


@pytest.fixture
def node_host(short_tmp) -> Iterator[NodeHost]:
    node_host = make_node_host(short_tmp).start()
    yield node_host
    node_host.stop()


@pytest.fixture
def celery_worker(short_tmp):
    """The control plane's Celery worker (queue `celery`) on the test database and broker."""
    log = (short_tmp / "celery.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "config.celery_app", "worker", "-Q", "celery",
         "--pool=solo", "--without-mingle", "--without-gossip", "--loglevel=INFO"],
        cwd=ROOT, env=platform_env(short_tmp), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield proc
    stop_process(proc, timeout=15)
    log.close()


def test_an_operator_dry_runs_then_runs_the_purge_from_its_page(
    page, live_server, node_host, celery_worker
):
    ghosts = [make_zombie("Ghost A"), make_zombie("Ghost B")]
    alive = make_zombie("Alive", called=1)
    for server in [*ghosts, alive]:
        wait_for(lambda s=server: state_of(s) == "running", 30, f"{server.name} to run")
    operator = User.objects.create_superuser(username="op@example.com", email="op@example.com",
                                             password=PASSWORD)  # fmt: skip
    authenticator = authenticator_of(operator)

    page.goto(f"{live_server.url}/accounts/login/?next=/ops/purge/")
    page.get_by_label("E-mail address").fill("op@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    # The operator pages ask for the second factor, then go on to the page asked for.
    page.get_by_label("One-time code").fill(current_code(authenticator))
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("heading", name="Zombie purge").wait_for()
    candidates = page.locator("#candidates").inner_text()
    assert "Ghost A PBX" in candidates and "Ghost B PBX" in candidates
    assert "Alive PBX" not in candidates
    assert "No activity for 730 days" in candidates

    page.get_by_role("button", name="Dry run now").click()
    page.locator("#run-summary").wait_for(timeout=60_000)
    assert "2 candidates, 0 purged" in page.locator("#run-summary").inner_text()
    assert "Would purge." in page.locator("#run-items").inner_text()
    assert VirtualServer.objects.count() == 3

    page.get_by_role("link", name="Back to the purge").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Run now", exact=True).click()
    page.locator("#run-summary").wait_for(timeout=90_000)
    summary = page.locator("#run-summary").inner_text()
    assert "2 candidates, 2 purged" in summary and "0 errors" in summary
    assert list(VirtualServer.objects.values_list("name", flat=True)) == ["Alive PBX"]
    assert Tombstone.objects.count() == 2
    runs = list(PurgeRun.objects.order_by("pk").values_list("trigger", "dry_run", "state"))
    assert runs == [("operator", True, "finished"), ("operator", False, "finished")]

    page.get_by_role("link", name="Back to the purge").click()
    assert "Ghost A PBX" in page.locator("#tombstones").inner_text()
    page.screenshot(path="var/purge-page.png", full_page=True)
