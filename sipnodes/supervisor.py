"""The one module that talks to a host's supervisord: program files and XML-RPC.

Imports nothing from Django, so `platform/bin/stop-node` can use it directly.

Changes are applied in the order `supervisorctl update` uses (reloadConfig; stop and
remove removed groups; stop, remove and re-add changed ones; add new ones), and the
faults that mean "already so" count as success.
"""

import os
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport

ALREADY_SO = {Faults.ALREADY_ADDED, Faults.BAD_NAME, Faults.NOT_RUNNING, Faults.ALREADY_STARTED}


class SupervisorUnavailable(Exception):
    """supervisord does not answer on the host's socket."""


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # supervisord's statename: RUNNING, STARTING, BACKOFF, FATAL, STOPPED, EXITED...
    pid: int
    description: str
    spawn_error: str


def program_name(server_id: int) -> str:
    """A virtual server's worker is the supervisord program `vs-<id>`."""
    return f"vs-{server_id}"


def server_id_of(program: str) -> int | None:
    """The server id of a `vs-<id>` program; None for the host's other programs."""
    prefix, _, number = program.partition("-")
    return int(number) if prefix == "vs" and number.isdigit() else None


def write_atomically(path: Path, text: str) -> bool:
    """Write via a temporary file and rename; returns whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return True


def webphone_program_name(server_id: int) -> str:
    """A virtual server's web phone gateway is the supervisord program `wp-<id>`."""
    return f"wp-{server_id}"


def program_section(
    *,
    name: str,
    command: str,
    directory: Path,
    log_file: Path,
    autostart: bool,
    autorestart: str = "true",
) -> str:
    """A supervisord program for one worker; three quick crashes in a row make it FATAL.

    `autorestart = unexpected` (the web phone gateway) restarts it only when it did not
    exit with code 0 (supervisord's default `exitcodes`): a gateway that exits 0 has no
    page left to serve.
    """
    return (
        f"[program:{name}]\n"
        f"command = {command}\n"
        f"directory = {directory}\n"
        f"autostart = {'true' if autostart else 'false'}\n"
        f"autorestart = {autorestart}\n"
        "startsecs = 1\n"
        "startretries = 3\n"
        "stopsignal = TERM\n"
        "stopwaitsecs = 10\n"
        "redirect_stderr = true\n"
        f"stdout_logfile = {log_file}\n"
        "stdout_logfile_maxbytes = 1MB\n"
        "stdout_logfile_backups = 1\n"
    )


class Supervisor:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        transport = SupervisorTransport(None, None, f"unix://{socket_path}")
        self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def _call(self, method: str, *args: object) -> object:
        try:
            return getattr(self._rpc, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in ALREADY_SO:
                return None
            raise
        except OSError as exc:
            raise SupervisorUnavailable(
                f"supervisord is not answering on {self.socket_path}: {exc.strerror or exc}"
            ) from exc

    def update(self) -> None:
        """Apply the program files on disk, as `supervisorctl update` does."""
        [[added, changed, removed]] = self._call("reloadConfig")
        for name in removed:
            self._call("stopProcessGroup", name)
            self._call("removeProcessGroup", name)
        for name in changed:
            self._call("stopProcessGroup", name)
            self._call("removeProcessGroup", name)
            self._call("addProcessGroup", name)
        for name in added:
            self._call("addProcessGroup", name)

    def stop_workers(self, prefix: str = "vs-", timeout: float = 60.0) -> None:
        """Stop every worker at once; supervisord's own shutdown stops one group per tick."""
        names = [info.name for info in self.all_info() if info.name.startswith(prefix)]
        self.stop_all(names, timeout)

    def stop_all(self, names: list[str], timeout: float = 60.0) -> None:
        """Stop these programs at once (each stop waits ~0.8 s when done one by one)."""
        for name in names:
            self._call("stopProcessGroup", name, False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(
                info.state in {"RUNNING", "STARTING", "BACKOFF", "STOPPING"}
                for info in self.all_info()
                if info.name in names
            ):
                return
            time.sleep(0.1)

    def start(self, name: str) -> None:
        self._call("startProcess", name, False)

    def stop(self, name: str) -> None:
        self._call("stopProcess", name, True)

    def signal(self, name: str, signal: str) -> None:
        self._call("signalProcess", name, signal)

    def info(self, name: str) -> ProcessInfo | None:
        raw = self._call("getProcessInfo", name)
        return _process_info(raw) if raw else None

    def all_info(self) -> list[ProcessInfo]:
        return [_process_info(raw) for raw in self._call("getAllProcessInfo")]

    def log_tail(self, name: str, length: int = 2000) -> str:
        result = self._call("tailProcessStdoutLog", name, 0, length)
        return result[0] if result else ""


def _process_info(raw: dict) -> ProcessInfo:
    return ProcessInfo(
        name=raw["name"],
        state=raw["statename"],
        pid=raw["pid"],
        description=raw["description"],
        spawn_error=raw.get("spawnerr", ""),
    )
