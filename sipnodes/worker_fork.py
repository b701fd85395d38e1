"""Workers forked from the node's supervisord, which has the engine already loaded.

Loading the engine (Python, asyncio, uvloop, the compiled modules, the
dataclasses they define) costs a new interpreter about 0.15 s of CPU and 6 MiB
of its own heap; a host with hundreds of servers pays that at every reboot and
keeps it for good (`bench/fleet_start.py`: 200 servers answer in 17.6 s at
14.6 MiB PSS each when executed, 2.7 s at 8.7 MiB forked). So supervisord
loads the engine once, through this plugin (an `[rpcinterface:worker_fork]`
section of `platform/node-supervisord.conf`), and spawns each
`python -m sipnodes.engine ...` program by running the preloaded engine in the
child it has just forked, instead of executing a new interpreter.
The worker still is supervisord's own child, started, stopped, logged and
restarted as any program (the `[program:vs-<id>]` sections do not change);
its memory is shared with supervisord's copy until the worker writes to it.

Anything else supervisord spawns is executed as usual, and so is a worker
whenever the preloaded copy might differ from what the command would run:
another interpreter or project tree, other engine sources or build (the host
was updated after supervisord started: restart it to fork again), or
`SIPCLOUD_ENGINE_PURE` set differently.

No Django here: supervisord imports this module.
"""

from __future__ import annotations

import gc
import importlib
import io
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

import setproctitle

from sipnodes.engine import compiled

ENGINE_MODULE = "sipnodes.engine"
# The handlers supervisord installs for itself; a worker starts with Python's own.
SUPERVISORD_SIGNALS = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

Execve = Callable[[str, Sequence[str], Mapping[str, str]], Any]


@dataclass(frozen=True)
class Preload:
    """What was loaded: the interpreter, the project tree and which engine build."""

    bin_dir: str  # the virtualenv's bin directory, resolved
    project_dir: str  # the directory that holds `sipnodes/`, resolved
    engine: str  # digest of the engine sources, build stamp and PURE setting

    @classmethod
    def current(cls, env: Mapping[str, str]) -> Preload:
        return cls(
            bin_dir=os.path.realpath(os.path.dirname(sys.executable)),
            project_dir=str(compiled.SOURCE_DIR.parents[1]),
            engine=engine_identity(env),
        )


def engine_identity(env: Mapping[str, str]) -> str:
    """The engine a new interpreter would load: its sources, its build, pure or not."""
    try:
        stamp = (compiled.BUILD_DIR / compiled.STAMP_NAME).read_text().strip()
    except OSError:
        stamp = ""
    pure = env.get(compiled.PURE_ENV, "") not in ("", "0")
    return f"{compiled.source_digest()}/{stamp}/{pure}"


def worker_args(
    preload: Preload, filename: str, argv: Sequence[str], env: Mapping[str, str], cwd: str
) -> list[str] | None:
    """The engine's arguments if this spawn may run the preloaded engine; None to exec."""
    if list(argv[1:3]) != ["-m", ENGINE_MODULE]:
        return None
    if os.path.realpath(os.path.dirname(filename)) != preload.bin_dir:
        return None
    if os.path.realpath(cwd) != preload.project_dir:
        return None
    if engine_identity(env) != preload.engine:
        return None
    return list(argv[3:])


def run_worker(engine_main: ModuleType, args: list[str], env: Mapping[str, str]) -> NoReturn:
    """In the forked child: become a fresh worker process, run it, and exit with its code."""
    # supervisord's objects stay alive here but their files are closed: never
    # collect them (a finalizer would close a descriptor the worker reuses).
    gc.freeze()
    for signum in SUPERVISORD_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Before the environment changes: the title takes the memory of supervisord's.
    name = env.get("SUPERVISOR_PROCESS_NAME", "worker")
    setproctitle.setproctitle(f"{name}: python -m {ENGINE_MODULE} {' '.join(args)}")
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [engine_main.__file__ or ENGINE_MODULE, *args]
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace"
    )
    code = 1
    try:
        code = engine_main.main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class ExecveOrFork:
    """supervisord's `execve`, called in the child it has just forked: the preloaded
    engine for a worker program, the real `execve` for anything else."""

    def __init__(self, execve: Execve, engine_main: ModuleType, preload: Preload) -> None:
        self.execve = execve
        self.engine_main = engine_main
        self.preload = preload

    def __call__(self, filename: str, argv: Sequence[str], env: Mapping[str, str]) -> Any:
        args = worker_args(self.preload, filename, argv, env, os.getcwd())
        if args is None:
            return self.execve(filename, argv, env)
        run_worker(self.engine_main, args, env)


def make_rpcinterface(supervisord: Any, **config: str) -> object:
    """supervisord's plugin hook: preload, hook `execve`, and offer no RPC methods.

    An engine that does not load leaves supervisord as it is (workers are executed
    and report their own error): the node agent must still start. A reload of
    supervisord (SIGHUP) calls this again: the engine it loaded at its start stays,
    and with it the identity workers are checked against.
    """
    options = supervisord.options
    if isinstance(options.execve, ExecveOrFork):
        return object()
    try:
        engine_main = importlib.import_module(f"{ENGINE_MODULE}.__main__")
    except Exception:
        options.logger.warn(
            "worker_fork: the engine does not load, workers are executed:\n"
            + traceback.format_exc()
        )
        return object()
    options.execve = ExecveOrFork(options.execve, engine_main, Preload.current(os.environ))
    # Objects loaded so far are never collected: the forked workers' garbage
    # collections leave their (shared) pages alone.
    gc.collect()
    gc.freeze()
    return object()
