"""`make run`'s script starts web, Celery worker and beat under supervisord; stop ends them."""

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, options_ping, wait_until

pytestmark = pytest.mark.e2e


def run(script: str, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "platform" / "bin" / script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def platform_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        SIPCLOUD_VAR_DIR=str(tmp_path / "var"),
        SIPCLOUD_BIND=f"127.0.0.1:{free_port()}",
        REDIS_URL="redis://127.0.0.1:6379/8",
        SIPCLOUD_DEFAULT_HOST_NAME=f"run-{free_port()}",
    )
    yield env
    run("stop-platform", env)


def manage_shell(env: dict, code: str) -> str:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_the_platform_starts_serves_runs_tasks_and_stops(platform_env):
    started = run("start-platform", platform_env)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "Operator account created" in started.stdout
    for program in ("web", "celery-worker", "celery-beat"):
        assert f"{program}" in started.stdout
    bind = platform_env["SIPCLOUD_BIND"]
    with urllib.request.urlopen(f"http://{bind}/signup/", timeout=10) as response:
        assert response.status == 200
        assert "free virtual SIP server" in response.read().decode()

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

    stopped = run("stop-platform", platform_env)
    assert stopped.returncode == 0
    assert not (Path(platform_env["SIPCLOUD_VAR_DIR"]) / "run" / "supervisord.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{bind}/signup/", timeout=3)
    assert options_ping(sip_port) is None
