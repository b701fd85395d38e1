"""baresip, driven headless: its config and its ctrl_tcp control connection."""

from __future__ import annotations

import json
import socket

from tests.support import free_port

BARESIP_CONFIG = """\
poll_method epoll
sip_listen 127.0.0.1:{sip_port}
sip_trans_def udp
net_interface 127.0.0.1
audio_player alsa,null
audio_source ausine,440
audio_alert alsa,null
ausrc_srate 48000
ausrc_channels 2
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module menu.so
module ctrl_tcp.so
module_app account.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
rtp_ports {rtp}-{rtp_end}
"""


def spaced_port() -> int:
    """A port whose +1 is free too (baresip opens TLS on port+1)."""
    while True:
        port = free_port()
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
        finally:
            s.close()


def ctrl(sock: socket.socket, command: str, params: str = "") -> None:
    body = json.dumps({"command": command, "params": params, "token": command}).encode()
    sock.sendall(str(len(body)).encode() + b":" + body + b",")
