"""`make run`'s script starts web, Celery worker and beat under supervisord; stop ends them."""

import os
import urllib.request
from pathlib import Path

import pytest

from tests.sipnodes.private_servers import manage
from tests.support import free_port, options_ping, run_script, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def platform_env(short_tmp):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        SIPCLOUD_VAR_DIR=str(short_tmp / "var"),
        SIPCLOUD_BIND=f"127.0.0.1:{free_port()}",
        REDIS_URL="redis://127.0.0.1:6379/8",
        SIPCLOUD_DEFAULT_HOST_NAME=f"run-{free_port()}",
    )
    yield env
    run_script("stop-platform", env, timeout=120)


def manage_shell(env: dict, code: str) -> str:
    """The last line `manage.py shell -c CODE` prints."""
    return manage(env, "shell", "-c", code).strip().splitlines()[-1]


def test_the_platform_starts_serves_runs_tasks_and_stops(platform_env):
    started = run_script("start-platform", platform_env, timeout=120)
    assert "Operator account created" in started
    for program in ("web", "celery-worker", "celery-beat"):
        assert f"{program}" in started
    bind = platform_env["SIPCLOUD_BIND"]
    with urllib.request.urlopen(f"http://{bind}/signup/", timeout=10) as response:
        assert response.status == 200
        # No Accept-Language: the default language, Chinese, from the compiled catalogue.
        assert "免费获取您的虚拟SIP服务器" in response.read().decode()

    # The Celery worker really runs tasks from the broker: a lapsed paid edition falls back.
    manage_shell(
        platform_env,
        "import datetime; from tenants.models import Tenant; "
        "from sipnodes.services import server_create; "
        "s = server_create(tenant=Tenant.objects.create(name='t'), name='paid', edition=20); "
        "s.paid_until = datetime.date(2020, 1, 1); s.save(); "
        "from sipnodes.tasks import lapse_paid_editions; lapse_paid_editions.delay(); print(s.pk)",
    )
    lapsed = wait_until(
        lambda: (
            manage_shell(
                platform_env,
                "from sipnodes.models import VirtualServer; "
                "print(VirtualServer.objects.get(name='paid').edition)",
            )
            == "5"
        ),
        timeout=30,
    )
    assert lapsed, (Path(platform_env["SIPCLOUD_VAR_DIR"]) / "log/celery-worker.log").read_text()
    beat_log = Path(platform_env["SIPCLOUD_VAR_DIR"]) / "log" / "celery-beat.log"
    assert "beat: Starting" in beat_log.read_text()

    # The local SIP host's node agent runs the new server's worker.
    sip_port = int(
        manage_shell(
            platform_env,
            "from sipnodes.models import VirtualServer; "
            "print(VirtualServer.objects.get(name='paid').sip_port)",
        )
    )
    assert wait_until(lambda: options_ping(sip_port), timeout=30)

    run_script("stop-platform", platform_env, timeout=120)  # raises unless it exits 0
    assert not (Path(platform_env["SIPCLOUD_VAR_DIR"]) / "run" / "supervisord.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{bind}/signup/", timeout=3)
    assert options_ping(sip_port) is None
