"""A supervisord of one's own for worker programs, as on a node but without its agents.

Used by the worker_fork tests and by `bench/fleet_start.py`.
"""

from __future__ import annotations

from pathlib import Path

# As platform/node-supervisord.conf: workers forked from supervisord's preloaded engine.
WORKER_FORK = """[rpcinterface:worker_fork]
supervisor.rpcinterface_factory = sipnodes.worker_fork:make_rpcinterface
"""

CONF = """
[unix_http_server]
file = {dir}/supervisor.sock
[supervisord]
logfile = {dir}/supervisord.log
pidfile = {dir}/supervisord.pid
environment = PYTHONDONTWRITEBYTECODE=""  ; as platform/node-supervisord.conf
childlogdir = {dir}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{worker_fork}[supervisorctl]
serverurl = unix://{dir}/supervisor.sock
[include]
files = {dir}/programs/*.conf
"""


def supervisord_conf(directory: Path, *, worker_fork: bool = True) -> str:
    """The config of a supervisord whose socket, logs and `programs/*.conf` are in `directory`."""
    return CONF.format(dir=directory, worker_fork=WORKER_FORK if worker_fork else "")
