"""One virtual SIP server: sans-IO cores and the asyncio shell around them (no Django)."""

from .compiled import package_path

__path__ = package_path(__path__)
