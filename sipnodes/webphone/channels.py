"""The Redis names and messages between the portal and a server's web phone gateway.

Imports no Django and no aiortc: both sides use it. Web phone sessions are ephemeral and
live only in Redis, never in the database.

- The portal `LPUSH`es a request (JSON: id, session, action, arguments) on the server's
  request list; the gateway `BRPOP`s it and `LPUSH`es the answer on the request's own
  reply list, which the portal `BLPOP`s. A request made while the gateway is still
  starting waits in the list.
- The gateway publishes each session's state (registration, call) on the session's
  channel and keeps the last one in a key, for a page that reconnects.
- The page's event stream keeps the session key alive (`SESSION_TTL`); when it lapses
  (tab closed) the gateway ends the call and unregisters.
- The gateway's alive key holds its boot id (refreshed every `ALIVE_EVERY` s): a page
  whose session belongs to another boot lost its gateway (crash, restart) and reconnects.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

PREFIX = "sipcloud:wp"
SESSION_TTL = 15  # seconds a session outlives its page's event stream
ALIVE_TTL = 6
ALIVE_EVERY = 2.0
REPLY_TTL = 60
IDLE_EXIT = 20.0  # the gateway exits (code 0) this long after its last session closed
ACTIONS = ("open", "offer", "call", "answer", "hangup", "hold", "resume", "close")


def requests_key(server_id: int) -> str:
    return f"{PREFIX}:{server_id}:requests"


def alive_key(server_id: int) -> str:
    return f"{PREFIX}:{server_id}:alive"


def reply_key(request_id: str) -> str:
    return f"{PREFIX}:reply:{request_id}"


def session_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}"


def state_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}:state"


def events_channel(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}:events"


def new_id() -> str:
    return secrets.token_urlsafe(12)


def request(session_id: str, action: str, **arguments: Any) -> tuple[str, bytes]:
    """A request's id and its JSON."""
    request_id = new_id()
    body = {"id": request_id, "session": session_id, "action": action, **arguments}
    return request_id, json.dumps(body).encode()
