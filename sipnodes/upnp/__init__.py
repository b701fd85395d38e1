"""UPnP on a SIP host behind an office router: the host's UPnP agent maps its servers' ports.

`plan` decides (sans-IO), `igd` talks to the router, `agent` runs the loop;
docs/upnp.md describes the feature.
"""
