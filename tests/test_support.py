"""The shared test helpers: a missing tool skips here and fails on CI; /proc socket probes."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.support import PYTHON, ROOT, free_port, listening, wait_read_by_peer

NEEDS_A_MISSING_TOOL = """\
from tests.support import require_tool


def test_needs_it():
    require_tool("sipcloud-no-such-tool", "sipcloud-no-such-package")
"""


@pytest.mark.parametrize(
    ("ci", "returncode", "outcome"),
    [(None, 0, "1 skipped"), ("true", 1, "1 failed")],
)
def test_a_missing_tool_skips_locally_and_fails_on_ci(tmp_path, ci, returncode, outcome):
    (tmp_path / "test_tool.py").write_text(NEEDS_A_MISSING_TOOL)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [PYTHON, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == returncode, output
    assert outcome in output, output
    assert "sipcloud-no-such-tool is not installed (Debian package sipcloud-no-such" in output


def test_listening_sees_udp_and_tcp_but_not_a_tcp_socket_that_only_bound():
    port = free_port()
    assert not listening(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", port))
        assert not listening(port)
        tcp.listen()
        assert listening(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
        assert listening(port)


def test_wait_read_by_peer_returns_once_the_peer_has_read():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"hello")
            with pytest.raises(pytest.fail.Exception, match="the peer to read our bytes"):
                wait_read_by_peer(client, timeout=0.3)
            assert peer.recv(5) == b"hello"
            wait_read_by_peer(client)
