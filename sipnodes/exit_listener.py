"""supervisord event listener: reports a worker that died unexpectedly as a `crash` event.

Runs on each SIP host beside the workers (no Django). The ingest consumer counts these
events into `VirtualServer.restart_count`.
"""

import logging
import os
import sys
import time

import redis
from supervisor import childutils

from sipnodes.engine.events import STREAM_KEY, STREAM_MAXLEN, CrashData, make_event
from sipnodes.supervisor import server_id_of

log = logging.getLogger(__name__)


def crashed_server(headers: dict[str, str], payload: str) -> tuple[int, CrashData] | None:
    """(server id, event data) when a `vs-<id>` worker exited unexpectedly or failed to start."""
    fields = childutils.get_headers(payload)
    server_id = server_id_of(fields.get("processname", ""))
    if server_id is None:
        return None
    event = headers.get("eventname")
    if event == "PROCESS_STATE_EXITED" and fields.get("expected") == "0":
        return server_id, CrashData(pid=int(fields.get("pid", 0)))
    if event == "PROCESS_STATE_BACKOFF":
        return server_id, CrashData(pid=0)  # it never got as far as running
    return None


def main() -> None:
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        crash = crashed_server(headers, payload)
        if crash:
            server_id, data = crash
            event = make_event(data, server_id, time.time())
            try:
                client.xadd(STREAM_KEY, event.fields(), maxlen=STREAM_MAXLEN, approximate=True)
            except redis.RedisError as exc:
                log.warning("could not report the crash of vs-%s: %s", server_id, exc)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
