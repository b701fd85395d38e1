"""End to end: SIPVicious against a real worker (Debian `sipvicious`: svwar, svcrack).

The attacker runs from 127.0.0.1; the real phone (SIPp) from 127.0.0.2. svwar finds no
extension; svcrack, with the right password 50th in its list, never gets to try it: after
5 wrong answers its address is ignored; and the phone registers all along.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from sipnodes.engine.events import guard_key
from sipnodes.engine.guard import THRESHOLD
from tests.support import require_tool, wait_until

pytestmark = pytest.mark.e2e

ATTACKER = "127.0.0.1"  # svcrack and svwar send from the address they reach the worker by
PHONE = "127.0.0.2"


def test_svwar_finds_no_extension(start_worker, tmp_path):
    worker = start_worker()
    svwar = require_tool("svwar", "sipvicious")
    # Each run binds its own port: the worker rightly goes on retransmitting its 407 to the
    # INVITE run's unacknowledged requests, and svwar would take a late one for its baseline.
    for method, port in (("REGISTER", 5161), ("INVITE", 5162), ("OPTIONS", 5163)):
        out = subprocess.run(
            [
                svwar,
                "-b",
                ATTACKER,
                "-m",
                method,
                "-e",
                "95-110",
                "--force",
                "-P",
                str(port),
                "-p",
                str(worker.port),
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        rows = [line for line in out.stdout.splitlines() if line.strip().startswith("| ")]
        found = [row for row in rows if not row.strip().startswith("| Extension")]
        assert found == [], f"{method}: svwar found extensions:\n{out.stdout}\n{out.stderr}"


def test_svcrack_is_stopped_and_the_real_phone_is_not(start_worker, sipp, redis_client, tmp_path):
    worker = start_worker()
    svcrack = require_tool("svcrack", "sipvicious")
    words = [f"guess{i}" for i in range(49)] + ["pw100"] + [f"more{i}" for i in range(150)]
    dictionary = tmp_path / "words.txt"
    dictionary.write_text("\n".join(words) + "\n")
    started = time.monotonic()
    attack = subprocess.Popen(
        [
            svcrack,
            "-b",
            ATTACKER,
            "-u",
            "100",
            "-d",
            str(dictionary),
            "-t",
            "0.02",
            "-p",
            str(worker.port),
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    blocked = wait_until(lambda: redis_client.get(guard_key(worker.server_uid)), 10.0)
    sipp.local_ip = PHONE
    sipp.register(worker.port, [("100", "pw100")])  # the phone, from elsewhere: unaffected
    try:
        out, _ = attack.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        attack.kill()
        out, _ = attack.communicate()
    took = time.monotonic() - started
    assert blocked, f"no block list written:\n{worker.log()}"
    assert "pw100" not in out, f"svcrack found the password:\n{out}"
    [entry] = json.loads(redis_client.get(guard_key(worker.server_uid)))
    assert (entry["source"], entry["user"]) == (ATTACKER, "100")
    # The passwords the worker actually checked: the threshold's worth, then none for the
    # rest of the attack, far under one a second.
    assert entry["checked"] == THRESHOLD, entry
    assert (entry["checked"] - THRESHOLD) / took < 1
