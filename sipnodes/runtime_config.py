"""Renders a virtual server's models into the worker's runtime config (sipnodes.engine.config).

This is the only place where the control plane's names meet the engine's schema.
"""

from pathlib import Path
from typing import Any

from sipnodes.models import LocalUser, VirtualServer


def render_runtime_config(
    server: VirtualServer, *, redis_url: str, spool_dir: Path
) -> dict[str, Any]:
    users = LocalUser.objects.filter(server=server).order_by("number")
    return {
        "server_id": server.pk,
        "name": server.name,
        "realm": server.realm,
        "max_clients": server.edition,
        "listen": {
            "address": server.host.listen_address,
            "sip_port": server.sip_port,
            "callback_port": server.callback_port,
            "media_ports": [server.media_port_first, server.media_port_last],
        },
        "public_address": server.host.public_address,
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
        "users": [
            {
                "number": user.number,
                "display_name": user.display_name,
                "ha1_md5": user.ha1_md5,
                "ha1_sha256": user.ha1_sha256,
                "call_level": user.call_level,
            }
            for user in users
        ],
        "dial_plan": [],
        "callback": {
            "app_server_address": server.callback_app_server_address,
            "port": server.callback_port,
            "default_caller": server.callback_default_caller,
            "secret": "",
        },
    }


def needs_restart(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Ports are bound at start; every other setting is re-read on SIGHUP."""
    return old is None or old.get("listen") != new["listen"]
