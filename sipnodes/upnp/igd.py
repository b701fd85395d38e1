"""The router's UPnP IGD, through `async-upnp-client` (the shell's IO; no decisions here).

Every call is bounded by a timeout. A router that answers with a UPnP error raises
`RouterRefused` with its code and text; one that cannot be found, does not answer in
time, or answers something that is not UPnP raises `RouterUnusable`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable
from datetime import timedelta
from ipaddress import IPv4Address
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpActionError, UpnpError
from async_upnp_client.profiles.igd import IgdDevice
from async_upnp_client.search import async_search

log = logging.getLogger(__name__)

SEARCH_TARGETS = IgdDevice.DEVICE_TYPES
CONNECTION_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
ONLY_PERMANENT_LEASES = 725  # UPnP IGD error: the router takes lease 0 (no expiry) only
ANY_REMOTE_HOST = IPv4Address("0.0.0.0")  # async-upnp-client raises on None
MAX_LISTED = 256  # GetGenericPortMappingEntry is asked at most this many times

T = TypeVar("T")


class RouterRefused(Exception):
    """The router answered a request with a UPnP error (its code and description)."""

    def __init__(self, text: str, code: int | None) -> None:
        super().__init__(text)
        self.code = code


class RouterUnusable(Exception):
    """No router, or one that does not answer in time or answers something unreadable."""


async def discover(source: str | None, timeout: float) -> str | None:
    """The description URL of the first IGD that answers an SSDP search, if any.

    `source` is the host's own LAN address: the search goes out of that interface.
    """
    found: list[str] = []

    async def on_answer(headers: Any) -> None:
        location = headers.get("location")
        if location and not found:
            found.append(location)

    addr = (source, 0) if source and source not in {"0.0.0.0", "::"} else None
    for target in SEARCH_TARGETS:
        try:
            await async_search(on_answer, timeout=max(1, round(timeout)), search_target=target,
                               source=addr)  # fmt: skip
        except OSError as exc:
            raise RouterUnusable(f"SSDP search failed: {exc}") from exc
        if found:
            return found[0]
    return None


class Router:
    """One IGD, by its description URL."""

    def __init__(self, location: str, device: IgdDevice, timeout: float) -> None:
        self.location = location
        self.device = device
        self.timeout = timeout
        self.permanent_only = False

    @classmethod
    async def connect(cls, location: str, timeout: float) -> Router:
        """Read the router's description; it must offer port mappings."""
        factory = UpnpFactory(AiohttpRequester(timeout=max(1, round(timeout))), non_strict=True)
        device = await _bounded(factory.async_create_device(location), timeout, location)
        services = [s for s in device.all_services if s.service_type in CONNECTION_SERVICES]
        if not any(s.has_action("AddPortMapping") for s in services):
            raise RouterUnusable(f"{location}: the device offers no port mappings")
        return cls(location, IgdDevice(device, None), timeout)

    def local_address(self) -> str:
        """This host's address towards the router: the internal client of its mappings."""
        router = urlsplit(self.location).hostname or ""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((router, 9))
            except OSError as exc:
                raise RouterUnusable(f"{self.location}: no route to the router: {exc}") from exc
            return str(probe.getsockname()[0])

    async def external_address(self) -> str:
        address = await self._call(self.device.async_get_external_ip_address())
        try:
            return str(IPv4Address(address or ""))
        except ValueError:
            raise RouterUnusable(f"the router reports external address {address!r}") from None

    async def add(self, port: int, client: str, description: str, lease: float) -> None:
        """Map UDP `port` on the router to `client`:`port` (again: renews the lease)."""

        def request(seconds: int) -> Awaitable[None]:
            return self.device.async_add_port_mapping(
                ANY_REMOTE_HOST, port, "UDP", port, IPv4Address(client), True, description,
                timedelta(seconds=seconds),
            )  # fmt: skip

        try:
            await self._call(request(0 if self.permanent_only else int(lease)))
        except RouterRefused as exc:
            if exc.code != ONLY_PERMANENT_LEASES:
                raise
            self.permanent_only = True  # removed by the agent when its server stops
            await self._call(request(0))

    async def delete(self, port: int) -> None:
        await self._call(self.device.async_delete_port_mapping(ANY_REMOTE_HOST, port, "UDP"))

    async def mappings(self) -> list[tuple[int, str, str]]:
        """(external port, internal client, description) of the router's UDP mappings."""
        found = []
        for index in range(MAX_LISTED):
            try:
                entry = await self._call(self.device.async_get_generic_port_mapping_entry(index))
            except RouterRefused:  # 713 SpecifiedArrayIndexInvalid: past the last one
                break
            if entry is None:
                break
            if entry.protocol == "UDP":
                found.append((int(entry.external_port), str(entry.internal_client),
                              str(entry.description)))  # fmt: skip
        return found

    async def _call(self, request: Awaitable[T]) -> T:
        return await _bounded(request, self.timeout, self.location)


async def _bounded(request: Awaitable[T], timeout: float, where: str) -> T:
    """The request's answer, or the router's fault as `RouterRefused`/`RouterUnusable`."""
    try:
        return await asyncio.wait_for(request, timeout)
    except UpnpActionError as exc:
        code = exc.error_code
        raise RouterRefused(f"{code} {exc.error_desc or ''}".strip(), code) from exc
    except TimeoutError:
        raise RouterUnusable(f"{where}: no answer within {timeout:g} s") from None
    except (UpnpError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
        raise RouterUnusable(f"{where}: {type(exc).__name__}: {exc}") from exc
