"""The engine stays a lean, Django-free process with sans-IO cores.

Modules are found on disk, so a new module is checked without editing a list.
"""

import ast
import subprocess
import sys

from tests.support import ROOT

ENGINE = ROOT / "sipnodes" / "engine"
# The asyncio shell: the only modules that may own sockets, clocks and Redis.
SHELL = {"server", "transport", "eventsink", "mediaports", "__main__"}
IO_MODULES = {"asyncio", "socket", "time", "redis", "uvloop", "selectors", "threading"}


def engine_modules() -> list[str]:
    return sorted(p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__")


def imported_roots(path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports only)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_module_list_is_found_on_disk():
    modules = engine_modules()
    assert {"calls", "core", "transaction", "server"} <= set(modules)
    assert set(modules) >= SHELL, "a shell module was renamed: update SHELL"


def test_engine_imports_no_django_and_no_other_app():
    modules = ["sipnodes.engine"] + [f"sipnodes.engine.{m}" for m in engine_modules()]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
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


def test_sans_io_cores_import_no_io():
    offenders = {
        module: sorted(imported_roots(ENGINE / f"{module}.py") & IO_MODULES)
        for module in engine_modules()
        if module not in SHELL
    }
    assert {m: found for m, found in offenders.items() if found} == {}


def test_no_engine_function_is_longer_than_a_screen():
    """Every function of the engine reads in one pass (about 60 lines at most)."""
    long = [
        f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for module in engine_modules()
        for node in ast.walk(ast.parse((ENGINE / f"{module}.py").read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_the_check_sees_an_io_import(tmp_path):
    """The AST check itself: an import of `time` inside a function is found."""
    module = tmp_path / "core_like.py"
    module.write_text("def f():\n    import time\n    from asyncio import sleep\n")
    assert imported_roots(module) >= {"time", "asyncio"}
