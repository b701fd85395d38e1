"""The mypyc build of the engine is loaded only when it matches the sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipnodes.engine import compiled
from tests.support import missing

SOURCE_PATH = [str(compiled.SOURCE_DIR)]


def stamped(build: Path, digest: str) -> Path:
    (build / "sipnodes" / "engine").mkdir(parents=True)
    (build / compiled.STAMP_NAME).write_text(digest + "\n")
    return build


def test_a_current_build_comes_first(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    build = stamped(tmp_path, compiled.source_digest())
    assert compiled.package_path(SOURCE_PATH, build) == [
        str(build / "sipnodes" / "engine"),
        *SOURCE_PATH,
    ]


def test_a_stale_or_missing_build_is_never_loaded(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    assert compiled.package_path(SOURCE_PATH, tmp_path / "none") == SOURCE_PATH
    stale = stamped(tmp_path / "stale", "0" * 64)  # built from sources edited since
    assert compiled.package_path(SOURCE_PATH, stale) == SOURCE_PATH


def test_the_python_sources_can_be_forced(tmp_path, monkeypatch):
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    build = stamped(tmp_path, compiled.source_digest())
    assert compiled.package_path(SOURCE_PATH, build) == SOURCE_PATH


def test_an_edit_changes_the_digest(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\n")
    before = compiled.source_digest(tmp_path)
    (tmp_path / "b.py").write_text("x = 2\n")
    assert compiled.source_digest(tmp_path) != before


@pytest.mark.e2e
def test_the_worker_runs_the_compiled_engine(start_worker):
    """`make test` builds it first: the suite and its workers run what production runs."""
    if not compiled.running_compiled():
        missing("the engine is not compiled: run `make engine`")
    worker = start_worker()
    assert "compiled engine" in worker.log()
