import json
import socket
import subprocess
import sys

import pytest

from sipnodes.engine.config import ConfigError, load_config, parse_config
from tests.support import ROOT

from .helpers import config_dict


def test_example_document_parses():
    config = parse_config(config_dict())
    assert config.server_id == 12 and config.realm == "vs12.sipcloud"
    assert config.listen.media_ports == (40000, 40019)
    assert config.users_by_number["100"].call_level == 1
    assert config.call_limits.max_call_duration == 0
    assert config.auth.algorithms == ("MD5", "SHA-256")
    assert config.registrar.min_expires == 60


def test_the_server_uid_keys_the_live_state_and_falls_back_to_the_id():
    uid = "0b7f3c52-8d0e-4d8a-9a55-2f1e6c1f3a10"
    assert parse_config(config_dict(server_uid=uid)).server_uid == uid
    assert parse_config(config_dict()).server_uid == "id-12"  # rendered before uids existed


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["users"][2].update(ha1_md5="xyz"), "users[2].ha1_md5: expected 32 hex"),
        (lambda d: d["users"][0].update(ha1_sha256="ab" * 31), "users[0].ha1_sha256: expected 64"),
        (lambda d: d["users"][1].pop("number"), "users[1].number: missing"),
        (lambda d: d["users"].append(dict(d["users"][0])), "users[7].number: duplicate 100"),
        (lambda d: d["listen"].update(sip_port=70000), "listen.sip_port: expected a port"),
        (lambda d: d["listen"].update(sip_port="5060"), "listen.sip_port: expected an integer"),
        (lambda d: d.pop("realm"), "realm: missing"),
        (lambda d: d.update(max_clients=0), "max_clients: expected a number >= 1"),
        (lambda d: d.update(max_clients=True), "max_clients: expected an integer"),
        (lambda d: d["cdr"].update(failed_call_cdr="yes"), "cdr.failed_call_cdr: expected true"),
        (
            lambda d: d.update(dial_plan=[{"prefix": "1", "route": "pstn"}]),
            "dial_plan[0].route: expected one of",
        ),
        (
            lambda d: d.update(dial_plan=[{"prefix": "1", "strip": -1}]),
            "dial_plan[0].strip: expected a number >= 0",
        ),
        (lambda d: d["listen"].update(media_ports=[5, 1]), "listen.media_ports: first port"),
        (lambda d: d.update(auth={"algorithms": ["SHA-512"]}), "auth.algorithms"),
        (lambda d: d.update(server_uid=""), "server_uid: expected a non-empty string"),
        (lambda d: d.update(server_uid="a:b"), "server_uid: expected a non-empty string"),
        (lambda d: d.update(server_uid=7), "server_uid: expected a string"),
        (
            lambda d: d["users"][0].update(forwarding={"busy": "sales"}),
            "users[0].forwarding.busy: expected digits",
        ),
        (
            lambda d: d.update(hunt_groups=[{"number": "101", "members": ["100"]}]),
            "hunt_groups[0].number: 101 is already taken",
        ),
        (
            lambda d: d.update(hunt_groups=[{"number": "600", "mode": "random"}]),
            "hunt_groups[0].mode: expected one of",
        ),
        (
            lambda d: d.update(feature_codes={"dnd_on": "78"}),
            "feature_codes.dnd_on: expected * or #",
        ),
        (
            lambda d: d.update(feature_codes={"group_pickup": "*9"}),
            "feature_codes.group_pickup: *9 is the start of the code of forward_unconditional",
        ),
        (
            lambda d: d["callback"].update(app_server_address="as.example.com"),
            "callback.app_server_address: expected an IP address or nothing",
        ),
        (
            lambda d: d["callback"].update(secret="too short"),
            "callback.secret: expected 16-128 visible ASCII characters",
        ),
        (
            lambda d: d["callback"].update(default_caller="*78"),
            "callback.default_caller: expected a number",
        ),
    ],
)
def test_errors_name_the_field(mutate, message):
    data = config_dict()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith("config error: ")
    assert message in str(err.value)


def test_the_callback_settings_are_read_in_the_form_they_are_compared_in():
    data = config_dict(callback={"app_server_address": "::FFFF:7F00:1", "secret": "x" * 16})
    callback = parse_config(data).callback
    assert (callback.app_server_address, callback.secret) == ("127.0.0.1", "x" * 16)
    data = config_dict(callback={"app_server_address": "2001:DB8::1"})
    assert parse_config(data).callback.app_server_address == "2001:db8::1"
    assert parse_config(config_dict(callback={"app_server_address": ""})).callback.port == 0


def test_unreadable_and_non_json_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(bad)


def run_worker(tmp_path, data: dict) -> subprocess.CompletedProcess:
    """Run `python -m sipnodes.engine` on `data` until it exits (it should, at once)."""
    path = tmp_path / "vs.json"
    path.write_text(json.dumps(data))
    return subprocess.run(
        [sys.executable, "-m", "sipnodes.engine", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_worker_refuses_bad_config_naming_the_field(tmp_path):
    data = config_dict()
    data["users"][2]["ha1_md5"] = "short"
    proc = run_worker(tmp_path, data)
    assert proc.returncode == 2
    assert "config error: users[2].ha1_md5: expected 32 hex characters" in proc.stderr


def test_worker_reports_a_port_in_use(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    data = config_dict()
    data["listen"]["sip_port"] = taken.getsockname()[1]
    data["redis_url"] = "redis://127.0.0.1:1/0"
    try:
        proc = run_worker(tmp_path, data)
    finally:
        taken.close()
    assert proc.returncode == 1
    assert "cannot listen on 127.0.0.1:" in proc.stderr and "Traceback" not in proc.stderr
