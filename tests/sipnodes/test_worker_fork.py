"""Workers forked from supervisord's preloaded engine (sipnodes/worker_fork.py)."""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sipnodes import worker_fork
from sipnodes.supervisor import ProcessInfo, Supervisor, program_section
from tests.sipnodes.engine.helpers import config_dict
from tests.sipnodes.engine.processes import REDIS_URL
from tests.sipnodes.private_supervisord import supervisord_conf
from tests.support import ROOT, free_port, options_ping, wait_for, wait_until

ENGINE = [sys.executable, "-m", "sipnodes.engine", "--config", "/n/7.json"]


@pytest.fixture
def preload() -> worker_fork.Preload:
    return worker_fork.Preload.current(os.environ)


def test_an_engine_program_of_this_tree_runs_the_preloaded_engine(preload):
    args = worker_fork.worker_args(preload, ENGINE[0], ENGINE, dict(os.environ), str(ROOT))
    assert args == ["--config", "/n/7.json"]


def test_other_programs_interpreters_and_trees_are_executed(preload, tmp_path):
    env = dict(os.environ)
    other_module = [sys.executable, "-m", "sipnodes.webphone", "--config", "/n/7.json"]
    assert worker_fork.worker_args(preload, sys.executable, other_module, env, str(ROOT)) is None
    other_python = str(tmp_path / "bin" / "python")
    assert worker_fork.worker_args(preload, other_python, ENGINE, env, str(ROOT)) is None
    assert worker_fork.worker_args(preload, ENGINE[0], ENGINE, env, str(tmp_path)) is None


def test_an_engine_that_changed_since_the_preload_is_executed(preload):
    env = dict(os.environ)
    stale = worker_fork.Preload(preload.bin_dir, preload.project_dir, engine="older sources")
    assert worker_fork.worker_args(stale, ENGINE[0], ENGINE, env, str(ROOT)) is None
    pure = {**env, "SIPCLOUD_ENGINE_PURE": "0" if env.get("SIPCLOUD_ENGINE_PURE") else "1"}
    assert worker_fork.worker_args(preload, ENGINE[0], ENGINE, pure, str(ROOT)) is None


class Logger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def test_an_engine_that_does_not_load_leaves_supervisord_executing_workers(monkeypatch):
    """supervisord (and with it the node agent) must start even with a broken engine.

    A stand-in for supervisord's object: the hook only touches `options`."""
    execve = object()
    options = SimpleNamespace(execve=execve, logger=Logger())

    def broken(name: str) -> None:
        raise SyntaxError("invalid syntax (core.py, line 1)")

    monkeypatch.setattr(worker_fork.importlib, "import_module", broken)
    worker_fork.make_rpcinterface(SimpleNamespace(options=options))
    assert options.execve is execve
    assert "SyntaxError" in options.logger.warnings[0]


def test_a_supervisord_reload_keeps_the_engine_loaded_at_its_start():
    """SIGHUP makes supervisord call the plugin again, while the modules loaded first stay:
    the identity workers are checked against must stay theirs. (A stand-in for
    supervisord's object, as above.)"""
    execve = object()
    options = SimpleNamespace(execve=execve, logger=Logger())
    try:
        worker_fork.make_rpcinterface(SimpleNamespace(options=options))
        first = options.execve
        assert isinstance(first, worker_fork.ExecveOrFork) and first.execve is execve
        worker_fork.make_rpcinterface(SimpleNamespace(options=options))
        assert options.execve is first
    finally:
        gc.unfreeze()


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def private_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Private_Dirty")


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class Host:
    """A supervisord with the worker_fork plugin, as on a node, and its programs."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        (tmp / "programs").mkdir()
        self.conf = tmp / "supervisord.conf"
        self.conf.write_text(supervisord_conf(tmp))
        self.ports: dict[str, int] = {}
        self.supervisor = Supervisor(tmp / "supervisor.sock")

    def add_worker(self, environment: str = "") -> str:
        server_id = random.randint(1_000_000, 9_999_999)
        name = f"vs-{server_id}"
        port = self.ports[name] = free_port()
        data = config_dict(server_id=server_id, redis_url=REDIS_URL)
        data["listen"]["sip_port"] = port
        data["spool_dir"] = str(self.dir / f"spool-{name}")
        config = self.dir / f"{name}.json"
        config.write_text(json.dumps(data))
        section = program_section(
            name=name,
            command=f"{sys.executable} -m sipnodes.engine --config {config}",
            directory=ROOT,
            log_file=self.dir / f"{name}.log",
            autostart=True,
        )
        if environment:
            section += f"environment = {environment}\n"
        (self.dir / "programs" / f"{name}.conf").write_text(section)
        return name

    def start(self) -> None:
        subprocess.run([str(ROOT / ".venv/bin/supervisord"), "-c", str(self.conf)], check=True)
        self.pid = int(wait_until(lambda: self._pid_file(), 10.0))

    def _pid_file(self) -> str:
        path = self.dir / "supervisord.pid"
        return path.read_text().strip() if path.exists() else ""

    def info(self, name: str) -> ProcessInfo:
        return next(i for i in self.supervisor.all_info() if i.name == name)

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def answers(self, name: str) -> bool:
        return wait_until(lambda: options_ping(self.ports[name]) is not None, 15.0)

    def shutdown(self) -> None:
        subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(self.conf), "shutdown"],
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: not (self.dir / "supervisord.pid").exists(), 30.0)


@pytest.mark.e2e
def test_supervisord_forks_workers_from_its_preloaded_engine(short_tmp):
    """A forked worker is supervisord's child, small, shows its own command line in ps,
    and is stopped and restarted as any program; a worker whose engine setting
    differs from the preload is executed as a new interpreter."""
    host = Host(short_tmp)
    vs_forked = host.add_worker()
    vs_executed = host.add_worker(environment="SIPCLOUD_ENGINE_PURE=1")
    host.start()
    try:
        assert host.answers(vs_forked), host.log(vs_forked)
        assert host.answers(vs_executed), host.log(vs_executed)
        forked, executed = host.info(vs_forked).pid, host.info(vs_executed).pid
        assert parent(forked) == host.pid == parent(executed)
        config = short_tmp / f"{vs_forked}.json"
        assert command_line(forked) == f"{vs_forked}: python -m sipnodes.engine --config {config}"
        assert command_line(executed).startswith(f"{sys.executable} -m sipnodes.engine")
        assert "listening on" in host.log(vs_forked)
        assert "Python engine" in host.log(vs_executed)
        # Most of the forked worker's memory is shared with supervisord's copy.
        assert private_mib(forked) < 0.6 * private_mib(executed)

        os.kill(forked, signal.SIGKILL)
        wait_for(lambda: host.info(vs_forked).pid not in (0, forked), 15.0, "restarted")
        assert host.answers(vs_forked), host.log(vs_forked)
        again = host.info(vs_forked).pid
        assert command_line(again).startswith(f"{vs_forked}: python -m sipnodes.engine")

        host.supervisor.stop_workers(timeout=30)
        assert host.info(vs_forked).state == "STOPPED"
        assert "Traceback" not in host.log(vs_forked)
        assert options_ping(host.ports[vs_forked]) is None
    finally:
        host.shutdown()
