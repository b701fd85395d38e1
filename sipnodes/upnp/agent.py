"""The host's UPnP agent (asyncio shell): finds the router, maps, renews, unmaps, reports.

One per SIP host, under the host's supervisord (`manage.py upnp_agent`). Every few
seconds a round reads the host's servers, asks the router for its external address,
lets `plan` decide, adds and removes mappings, and writes what happened to each server.
A fault of the router (none, refusing, slow, garbage) ends up in the servers' UPnP state;
nothing here touches the workers, which keep serving whatever the router does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from sipnodes import upnp_selectors, upnp_services
from sipnodes.upnp import plan
from sipnodes.upnp.igd import Router, RouterRefused, RouterUnusable, discover

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _db(fn: Callable[..., T], **kwargs: Any) -> T:
    """A selector or service, in Django's sync thread, on a live connection."""

    def call() -> T:
        close_old_connections()
        return fn(**kwargs)

    return await sync_to_async(call)()


class UpnpAgent:
    def __init__(
        self,
        host_name: str,
        *,
        poll: float = 5.0,
        lease: float = 1800.0,
        timeout: float = 5.0,
        search_every: float = 30.0,
    ) -> None:
        self.host_name = host_name
        self.poll = poll  # seconds between rounds: how soon a stopped server is unmapped
        self.timeout = timeout  # for each request to the router, and the SSDP search
        self.search_every = search_every  # while no router answers
        self.mappings = plan.Mappings(lease)
        self.router: Router | None = None
        self.client = ""  # this host's address on the router's LAN
        self.search_at = 0.0
        self.no_router = "no UPnP router answered yet"

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        log.info("UPnP agent for host %s ready.", self.host_name)
        while not stop.is_set():
            try:
                await self.round(loop.time())
            except Exception:  # a bug or the database: log it, try again next round
                log.exception("UPnP round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)

    async def round(self, now: float) -> None:
        host = await _db(upnp_selectors.host_upnp, host_name=self.host_name)
        if not host.behind_router:
            await self._release_all()
            await _db(upnp_services.host_record_router, host_name=self.host_name,
                      external_address="")  # fmt: skip
            await _db(upnp_services.servers_clear_upnp, host_name=self.host_name, keep=[])
            return
        eligible = [s.server_id for s in host.servers]
        try:
            router = await self._router(host.listen_address, now)
            external = await router.external_address()
            if not self.mappings.owned and self.mappings.renew_at == 0.0:
                await self._adopt(router)
            decisions = plan.plan(host.servers, host.max_mappings)
            refused = await self._apply(router, decisions, now)
        except RouterUnusable as exc:
            self._lose_router(str(exc))
            for server_id in eligible:
                await _db(upnp_services.server_record_upnp, server_id=server_id,
                          state=plan.NO_ROUTER, detail=self.no_router)  # fmt: skip
            await _db(upnp_services.servers_clear_upnp, host_name=self.host_name, keep=eligible)
            return
        await _db(upnp_services.host_record_router, host_name=self.host_name,
                  external_address=external)  # fmt: skip
        for d in decisions:
            if d.server_id in refused:
                state, detail, media = plan.REFUSED, refused[d.server_id], 0
            else:
                state, detail, media = d.state, "", d.media_ports
            await _db(upnp_services.server_record_upnp, server_id=d.server_id, state=state,
                      detail=detail, media_ports=media)  # fmt: skip
        await _db(upnp_services.servers_clear_upnp, host_name=self.host_name, keep=eligible)

    async def _router(self, source: str, now: float) -> Router:
        if self.router is not None:
            return self.router
        if now < self.search_at:
            raise RouterUnusable(self.no_router)
        self.search_at = now + self.search_every
        location = await discover(source, self.timeout)
        if location is None:
            raise RouterUnusable("no UPnP router answered the SSDP search")
        router = await Router.connect(location, self.timeout)
        self.client = router.local_address()
        log.info("UPnP router %s, this host is %s on its LAN", location, self.client)
        self.router = router
        return router

    def _lose_router(self, reason: str) -> None:
        if self.router is not None or reason != self.no_router:
            log.warning("UPnP router unusable: %s", reason)
        self.router = None
        self.no_router = reason
        self.mappings.forget_all()

    async def _adopt(self, router: Router) -> None:
        """Take over the mappings this host made before (the agent restarted): a server
        deleted meanwhile then loses its mappings like any other."""
        for port, client, text in await router.mappings():
            server_id = plan.server_of(self.host_name, text)
            if server_id is not None and client == self.client:
                self.mappings.added(server_id, [port])
        if self.mappings.owned:
            log.info("UPnP: took over %d mappings already on the router", len(self.mappings.owned))

    async def _apply(
        self, router: Router, decisions: list[plan.Decision], now: float
    ) -> dict[int, str]:
        """Remove what is no longer wanted, then add (or renew) each server's ports as one
        unit: a server the router refuses keeps none. The refused servers, with why."""
        for port in self.mappings.to_remove(decisions):
            await self._delete(router, port)
        renewing = now >= self.mappings.renew_at
        refused = {}
        for d in self.mappings.to_add(decisions, now):
            description = plan.description(self.host_name, d.server_id)
            for port in d.ports:
                try:
                    await router.add(port, self.client, description, self.mappings.lease)
                except RouterRefused as exc:
                    refused[d.server_id] = f"UDP {port}: {exc}"
                    log.warning("UPnP: the router refused vs-%d's UDP %d: %s", d.server_id,
                                port, exc)  # fmt: skip
                    break
                self.mappings.added(d.server_id, [port])
            if d.server_id in refused:
                mine = [p for p, sid in self.mappings.owned.items() if sid == d.server_id]
                for port in mine:
                    await self._delete(router, port)
        if renewing:
            self.mappings.renewed(now)
        return refused

    async def _delete(self, router: Router, port: int) -> None:
        with contextlib.suppress(RouterRefused):  # 714 NoSuchEntryInArray: gone already
            await router.delete(port)
        self.mappings.removed([port])

    async def _release_all(self) -> None:
        """The host is no longer behind a router: take back what was mapped, if anything."""
        if self.router is not None and self.mappings.owned:
            with contextlib.suppress(RouterUnusable):
                for port in list(self.mappings.owned):
                    await self._delete(self.router, port)
        self.router = None
        self.mappings.forget_all()
