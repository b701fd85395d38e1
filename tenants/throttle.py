"""The Redis limiter behind the portal's public forms: log-in, password reset and signup.

Why our own limiter rather than django-axes: axes counts failed passwords well, but its
cool-off is one period per request that is also the window it counts failures in, and it
clears expired attempts of every client with the period of the request at hand; a cool-off
that grows for one client (as issue 17 asks) is cut short by any other client's request.
Signup and password reset are not log-ins, so axes does not see them, and they need the same
rule per source address anyway. One small limiter does all three the same way:

- Redis is already a dependency of every portal process; INCR/PEXPIRE are atomic, and one
  Lua script checks or counts all of an attempt's keys at once, so concurrent attempts
  cannot slip past a limit.
- The counters are short-lived (a window of an hour, strikes of a day): nothing to clean up.
- If Redis cannot be reached the forms stay open, and the error is logged: the limiter
  guards against abuse, it must not take the portal down with it.

The rule for one key (docs/security.md):
- `limit` events (failed log-ins; submitted forms) within `window` start a cool-off;
- during a cool-off the attempt is refused before anything is checked, and not counted;
- each further cool-off of that key within `memory` is twice the one before, from
  `cooloff` up to `max_cooloff`.
"""

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import ngettext

log = logging.getLogger(__name__)

# KEYS: for each limited key three Redis keys: its count, its lock, its strikes.
# Returns the milliseconds until the longest lock among them ends, 0 if none is on.
_CHECK = """
local wait = 0
for i = 1, #KEYS, 3 do
  local ttl = redis.call('PTTL', KEYS[i + 1])
  if ttl > wait then wait = ttl end
end
return wait
"""

# KEYS as above; ARGV: for each key its limit, window, cool-off, max cool-off and memory
# (times in ms). Counts one event under every key whose lock is off; a key reaching its
# limit starts a cool-off. Returns the milliseconds of the longest cool-off started, 0 if none.
_COUNT = """
local started = 0
for i = 1, #KEYS, 3 do
  local a = (i - 1) / 3 * 5
  local limit, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local base, cap, memory = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if redis.call('PTTL', KEYS[i + 1]) <= 0 then
    local count = redis.call('INCR', KEYS[i])
    if count == 1 then redis.call('PEXPIRE', KEYS[i], window) end
    if count >= limit then
      local strikes = redis.call('INCR', KEYS[i + 2])
      redis.call('PEXPIRE', KEYS[i + 2], memory)
      local cooloff = math.floor(math.min(base * 2 ^ (strikes - 1), cap))
      redis.call('SET', KEYS[i + 1], strikes, 'PX', cooloff)
      redis.call('DEL', KEYS[i])
      if cooloff > started then started = cooloff end
    end
  end
end
return started
"""


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int
    window: timedelta
    cooloff: timedelta
    max_cooloff: timedelta
    memory: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Limit:
    """One rule applied to one key (an address, an account, or both)."""

    rule: Rule
    key: str


# Failed log-ins for an account from an address it has logged in from before: only its own
# failures there count, so an attacker elsewhere can never pause the owner at home.
LOGIN_KNOWN_ADDRESS = Rule(
    "login-known",
    limit=5,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=5),
    max_cooloff=timedelta(hours=1),
)
# Failed log-ins from an address, whatever the account (an office behind one NAT shares it).
LOGIN_ADDRESS = Rule(
    "login-address",
    limit=10,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=15),
    max_cooloff=timedelta(hours=24),
)
# Failed log-ins for an account from addresses it has never logged in from (a guessing
# attack spread over many addresses).
LOGIN_ACCOUNT = Rule(
    "login-account",
    limit=5,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=15),
    max_cooloff=timedelta(hours=24),
)
# Submitted signup forms from an address, whether they succeed or not.
SIGNUP_ADDRESS = Rule(
    "signup-address",
    limit=10,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=15),
    max_cooloff=timedelta(hours=24),
)
# Password reset requests from an address.
RESET_ADDRESS = Rule(
    "reset-address",
    limit=10,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=15),
    max_cooloff=timedelta(hours=24),
)
# Password reset requests for an e-mail address. Anyone can ask for anyone's: this only
# stops a mailbox being flooded, and its cool-off stays short, since the owner may be the
# one asking (the links already sent keep working through it).
RESET_EMAIL = Rule(
    "reset-email",
    limit=3,
    window=timedelta(hours=1),
    cooloff=timedelta(minutes=15),
    max_cooloff=timedelta(hours=1),
)

_clients: dict[str, redis.Redis] = {}


def _client() -> redis.Redis:
    url = settings.SIPCLOUD_THROTTLE_REDIS_URL
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _clients[url]


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _redis_keys(limits: list[Limit]) -> list[str]:
    prefix = settings.SIPCLOUD_THROTTLE_KEY_PREFIX
    keys = []
    for limit in limits:
        # Hashed: e-mail addresses are not kept in Redis, and keys stay short.
        digest = hashlib.sha256(limit.key.encode()).hexdigest()[:32]
        keys += [f"{prefix}{limit.rule.name}:{digest}:{part}" for part in ("n", "lock", "s")]
    return keys


def _until(wait_ms: int) -> datetime | None:
    return timezone.now() + timedelta(milliseconds=wait_ms) if wait_ms > 0 else None


def refused_until(limits: list[Limit]) -> datetime | None:
    """When the longest cool-off among the limits ends; None if the attempt may go ahead."""
    if not limits:
        return None
    keys = _redis_keys(limits)
    try:
        return _until(int(_client().eval(_CHECK, len(keys), *keys)))
    except redis.RedisError:
        log.exception("throttle: Redis unavailable, the attempt is let through")
        return None


def count(limits: list[Limit]) -> datetime | None:
    """Count one event under each limit; when a cool-off it started ends, None if none."""
    if not limits:
        return None
    keys = _redis_keys(limits)
    args: list[int] = []
    for limit in limits:
        rule = limit.rule
        args += [rule.limit, _ms(rule.window), _ms(rule.cooloff), _ms(rule.max_cooloff)]
        args.append(_ms(rule.memory))
    try:
        return _until(int(_client().eval(_COUNT, len(keys), *keys, *args)))
    except redis.RedisError:
        log.exception("throttle: Redis unavailable, the event is not counted")
        return None


def forget(limits: list[Limit]) -> None:
    """Drop the counts and cool-offs of the limits (their strikes stay for `memory`)."""
    keys = [key for key in _redis_keys(limits) if not key.endswith(":s")]
    if keys:
        try:
            _client().delete(*keys)
        except redis.RedisError:
            log.exception("throttle: Redis unavailable, nothing forgotten")


def client_address(request: HttpRequest) -> str | None:
    """The source address that counts: one IPv4 address, or an IPv6 /64.

    REMOTE_ADDR is the client's address: behind the HTTPS proxy gunicorn rewrites it from
    `X-Forwarded-For`, trusting only `FORWARDED_ALLOW_IPS` (docs/operations.md). No header is
    read here, so a client cannot choose its address. One IPv6 subscriber gets a whole /64
    and could otherwise start afresh from each of its addresses.
    """
    try:
        ip = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address)
    return str(ip)


def wait_text(until: datetime) -> str:
    """How long until `until`, in words: "12 minutes", "about 2 hours"."""
    minutes = max(1, -(-int((until - timezone.now()).total_seconds()) // 60))
    if minutes < 90:
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    hours = round(minutes / 60)
    return ngettext("about %(count)d hour", "about %(count)d hours", hours) % {"count": hours}
