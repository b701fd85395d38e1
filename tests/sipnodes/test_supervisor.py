import configparser

from sipnodes.engine.events import CrashData
from sipnodes.exit_listener import crashed_server
from sipnodes.supervisor import program_section, webphone_program_name, write_atomically


def test_program_section_is_a_supervisord_program(tmp_path):
    text = program_section(
        name="vs-7",
        command="/venv/bin/python -m sipnodes.engine --config /n/7.json",
        directory=tmp_path,
        log_file=tmp_path / "vs-7.log",
        autostart=False,
    )
    parser = configparser.ConfigParser()
    parser.read_string(text)
    section = parser["program:vs-7"]
    assert section["command"].endswith("--config /n/7.json")
    assert section["autostart"] == "false"
    assert section["autorestart"] == "true"
    assert section["startretries"] == "3"


def test_the_web_phone_gateway_is_restarted_only_after_a_crash(tmp_path):
    """It exits with code 0 when its last page has gone: supervisord leaves it stopped."""
    text = program_section(
        name=webphone_program_name(7),
        command="/venv/bin/python -m sipnodes.webphone --config /n/7.json",
        directory=tmp_path,
        log_file=tmp_path / "wp-7.log",
        autostart=False,
        autorestart="unexpected",
    )
    parser = configparser.ConfigParser()
    parser.read_string(text)
    section = parser["program:wp-7"]
    assert section["autorestart"] == "unexpected"
    assert "exitcodes" not in section  # supervisord's default: 0 is the expected exit


def test_write_atomically_reports_changes_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "nodes" / "1.json"
    assert write_atomically(path, "a")
    assert not write_atomically(path, "a")
    assert write_atomically(path, "b")
    assert path.read_text() == "b"
    assert [p.name for p in path.parent.iterdir()] == ["1.json"]
    assert oct(path.stat().st_mode)[-3:] == "600"


def headers(event: str) -> dict[str, str]:
    return {"eventname": event}


def test_an_unexpected_exit_of_a_worker_is_a_crash():
    payload = "processname:vs-42 groupname:vs-42 from_state:RUNNING expected:0 pid:991"
    assert crashed_server(headers("PROCESS_STATE_EXITED"), payload) == (
        42,
        CrashData(pid=991),
    )


def test_expected_exits_and_other_programs_are_not_crashes():
    expected = "processname:vs-42 groupname:vs-42 from_state:RUNNING expected:1 pid:991"
    agent = "processname:node-agent groupname:node-agent from_state:RUNNING expected:0 pid:5"
    assert crashed_server(headers("PROCESS_STATE_EXITED"), expected) is None
    assert crashed_server(headers("PROCESS_STATE_EXITED"), agent) is None
    backoff = "processname:vs-3 groupname:vs-3 from_state:STARTING tries:1"
    assert crashed_server(headers("PROCESS_STATE_BACKOFF"), backoff) == (
        3,
        CrashData(pid=0),
    )
