import subprocess
import sys

from tests.support import ROOT

MODULES = [
    "sipnodes.engine",
    "sipnodes.engine.__main__",
    "sipnodes.engine.calls",
    "sipnodes.engine.cdr",
    "sipnodes.engine.config",
    "sipnodes.engine.core",
    "sipnodes.engine.dialplan",
    "sipnodes.engine.digest",
    "sipnodes.engine.events",
    "sipnodes.engine.eventsink",
    "sipnodes.engine.location",
    "sipnodes.engine.media",
    "sipnodes.engine.registrar",
    "sipnodes.engine.server",
    "sipnodes.engine.sipmsg",
    "sipnodes.engine.timers",
    "sipnodes.engine.transaction",
    "sipnodes.engine.transport",
]


def test_engine_imports_no_django_and_no_other_app():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "apps = ('django', 'tenants', 'ops', 'config', 'sipnodes.models', 'sipnodes.services')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in apps[:4] or m in apps[4:])\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
