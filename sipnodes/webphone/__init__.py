"""The web phone: a gateway per virtual server between browsers (WebRTC) and its worker (SIP).

`python -m sipnodes.webphone --config var/hosts/<host>/nodes/<id>.json` runs it; see
docs/web-phone.md. Only the gateway imports aiortc (`media.py`, `gateway.py`); the portal
imports `channels.py` alone, and the SIP worker imports nothing from here.
"""
