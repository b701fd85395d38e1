"""A worker's live state in Redis: what must go when its server goes.

The worker keeps its registrations (`sipcloud:vs:<uid>:loc`) and its calls in progress
(`sipcloud:vs:<uid>:calls`) in Redis so that a restart finds them again. Both are keyed by
the server's uid, never reused, so a server can never restore another's state; deleting a
server (and, once it exists, purging one) still removes them, rather than leaving them to
their TTL.
"""

import logging
import uuid

import redis
from django.conf import settings
from django.db import transaction

from sipnodes.engine.config import uid_before_uids
from sipnodes.engine.events import live_calls_key
from sipnodes.engine.location import location_key
from sipnodes.models import VirtualServer

log = logging.getLogger(__name__)


def live_state_keys(*, server_uid: uuid.UUID | str, server_id: int | None = None) -> list[str]:
    """The keys of one server's live state; with its id, also those a worker whose config
    was rendered before servers had a uid writes (`id-<id>`, sipnodes.engine.config)."""
    uids = [str(server_uid)] + ([uid_before_uids(server_id)] if server_id is not None else [])
    return [key for uid in uids for key in (location_key(uid), live_calls_key(uid))]


def live_state_delete(*, server_uid: uuid.UUID | str, server_id: int | None = None) -> None:
    """Delete a server's live state. A Redis that cannot be reached is logged, not raised:
    the server is gone either way, and its keys' TTL is the backstop."""
    keys = live_state_keys(server_uid=server_uid, server_id=server_id)
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        client.delete(*keys)
    except redis.RedisError as exc:
        log.warning("could not delete the live state %s: %s", keys, exc)
    finally:
        client.close()


def live_state_delete_on_commit(server: VirtualServer) -> None:
    # Read now: a server deleted in the same transaction has no pk by commit time.
    server_uid, server_id = server.uid, server.pk
    transaction.on_commit(lambda: live_state_delete(server_uid=server_uid, server_id=server_id))
