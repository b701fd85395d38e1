"""Renders a virtual server's models into the worker's runtime config (sipnodes.engine.config).

This is the only place where the control plane's names meet the engine's schema.
"""

import dataclasses
from pathlib import Path
from typing import Any

from sipnodes.features_selectors import (
    hunt_group_member_numbers,
    server_feature_codes,
    server_hunt_groups,
)
from sipnodes.models import DialRule, LocalUser, Trunk, UpnpState, VirtualServer
from sipnodes.selectors import server_local_users
from sipnodes.trunk_selectors import server_dial_rules, server_trunks

# The sockets a worker binds when it starts: a change to one of them needs a restart.
# The call-back port is not among them: the worker re-binds it at a reload (SIGHUP).
BOUND_AT_START = ("address", "sip_port")

# The engine's `auth.algorithms`: the challenges sent, in this order, and the only
# algorithms whose answers are taken. SHA-256 first when both (RFC 8760: most preferred first).
DIGEST_ALGORITHMS = {
    VirtualServer.DigestAlgorithms.MD5: ("MD5",),
    VirtualServer.DigestAlgorithms.SHA256_MD5: ("SHA-256", "MD5"),
    VirtualServer.DigestAlgorithms.SHA256: ("SHA-256",),
}


def render_runtime_config(
    server: VirtualServer, *, redis_url: str, spool_dir: Path
) -> dict[str, Any]:
    users = server_local_users(server=server)
    return {
        "server_id": server.pk,
        "server_uid": str(server.uid),
        "name": server.name,
        "realm": server.realm,
        "max_clients": server.edition,
        "listen": {
            "address": server.host.listen_address,
            "sip_port": server.sip_port,
            "callback_port": server.callback_port,
            "media_ports": list(_media_ports(server)),
        },
        "public_address": server.host.advertised_address,
        "redis_url": redis_url,
        "spool_dir": str(spool_dir),
        "system": {
            "out_group_prefix": server.out_group_prefix,
            "prompt_language": server.prompt_language,
            "media_relay": server.media_relay,
            "upnp": server.upnp,
        },
        "cdr": {
            "failed_call_cdr": server.cdr_failed_calls,
            "realtime_display": server.cdr_realtime_display,
        },
        "call_limits": {"no_answer_timeout": 60, "max_call_duration": 0},
        "auth": {"algorithms": list(DIGEST_ALGORITHMS[server.digest_algorithms])},
        "users": [_user(user) for user in users],
        "hunt_groups": [
            {
                "number": group.number,
                "name": group.name,
                "mode": group.mode,
                "members": hunt_group_member_numbers(group=group),
                "ring_seconds": group.ring_seconds,
                "timeout": group.timeout,
                "overflow": group.overflow,
            }
            for group in server_hunt_groups(server=server)
        ],
        "feature_codes": dataclasses.asdict(server_feature_codes(server=server)),
        "trunks": [_trunk(trunk) for trunk in server_trunks(server=server).order_by("pk")],
        "dial_plan": [_rule(rule) for rule in server_dial_rules(server=server)],
        "external_line": server.external_line_id,
        "callback": {
            "app_server_address": server.callback_app_server_address,
            "port": server.callback_port,
            "default_caller": server.callback_default_caller,
            "secret": server.callback_secret,
        },
    }


def _media_ports(server: VirtualServer) -> tuple[int, int]:
    """The relay's block; with its ports mapped by UPnP, only the part the router forwards
    (docs/upnp.md): a call beyond it is refused (503) rather than left without audio."""
    mapped = server.upnp and server.host.behind_router and server.upnp_state == UpnpState.MAPPED
    if mapped and server.media_relay and server.upnp_media_ports:
        return server.media_port_first, server.media_port_first + server.upnp_media_ports - 1
    return server.media_port_first, server.media_port_last


def _user(user: LocalUser) -> dict[str, Any]:
    changed = user.call_settings_changed
    return {
        "number": user.number,
        "display_name": user.display_name,
        "ha1_md5": user.ha1_md5,
        "ha1_sha256": user.ha1_sha256,
        "call_level": user.call_level,
        "dnd": user.dnd,
        "forwarding": {
            "unconditional": user.forward_unconditional,
            "busy": user.forward_busy,
            "no_answer": user.forward_no_answer,
            "unreachable": user.forward_unreachable,
            "no_answer_seconds": user.no_answer_seconds,
        },
        "pickup_group": user.pickup_group,
        # The worker keeps a phone's change newer than this over the config's.
        "settings_changed": changed.timestamp() if changed is not None else 0.0,
    }


def _trunk(trunk: Trunk) -> dict[str, Any]:
    """Credentials only for a trunk that registers: an IP-trust trunk's stored ones (kept
    in case it registers again) are not the worker's business."""
    registration = None
    if trunk.registers:
        registration = {
            "user": trunk.username,
            "auth_user": trunk.auth_username,
            "password": trunk.password,
            "realm": trunk.realm,
            "expires": trunk.expires,
        }
    return {
        "id": trunk.pk,
        "name": trunk.name,
        "address": trunk.address,
        "port": trunk.port,
        "transport": trunk.transport,
        "registration": registration,
        "caller_id": trunk.caller_id,
        "caller_prefix": trunk.caller_prefix,
        "inbound": trunk.inbound,
        "dids": {did.number: did.user.number for did in trunk.dids.all()},
        "default_user": trunk.default_user.number if trunk.default_user else "",
    }


def _rule(rule: DialRule) -> dict[str, Any]:
    rendered: dict[str, Any] = {"prefix": rule.prefix, "route": rule.route}
    if rule.trunk_id is not None:
        rendered["trunk"] = rule.trunk_id
    rendered |= {"strip": rule.strip, "add": rule.add, "call_level": rule.call_level}
    return rendered


def needs_restart(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Only the SIP sockets are bound at start; every other setting, the call-back port,
    an edition's client limit and media block included, reaches the worker by SIGHUP."""
    if old is None:
        return True
    return any(old["listen"].get(key) != new["listen"][key] for key in BOUND_AT_START)
