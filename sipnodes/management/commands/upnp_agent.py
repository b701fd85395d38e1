"""Runs this SIP host's UPnP agent: its servers' port mappings on the office router."""

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from sipnodes.upnp.agent import UpnpAgent


class Command(BaseCommand):
    help = "Map this host's servers' ports on its router (UPnP IGD) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SIPCLOUD_HOST_NAME)
        parser.add_argument("--poll", type=float, default=settings.SIPCLOUD_UPNP_POLL)
        parser.add_argument("--lease", type=float, default=settings.SIPCLOUD_UPNP_LEASE)
        parser.add_argument("--timeout", type=float, default=settings.SIPCLOUD_UPNP_TIMEOUT)
        parser.add_argument(
            "--search-every", type=float, default=30.0, help="seconds between SSDP searches"
        )

    def handle(
        self,
        *args: object,
        host: str,
        poll: float,
        lease: float,
        timeout: float,
        search_every: float,
        **options: object,
    ) -> None:
        agent = UpnpAgent(host, poll=poll, lease=lease, timeout=timeout, search_every=search_every)
        asyncio.run(self._run(agent))

    async def _run(self, agent: UpnpAgent) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)
