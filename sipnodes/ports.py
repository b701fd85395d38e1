"""Port allocation on a SIP host: ports come from the host's ranges, never shared.

The ledger's unique (host, port) constraint is the guarantee; locking the host row
only keeps concurrent allocations from tripping over it.
"""

from collections.abc import Iterable

from sipnodes.models import MEDIA_PORTS_PER_CLIENT, PortAllocation, SipHost, VirtualServer


class NoPortsAvailable(Exception):
    """The host has no free port (or block of ports) left in the asked range."""


def media_block_size(edition: int) -> int:
    return edition * MEDIA_PORTS_PER_CLIENT


def used_ports(host: SipHost) -> set[int]:
    return set(PortAllocation.objects.filter(host=host).values_list("port", flat=True))


def first_free_port(candidates: range, used: set[int]) -> int:
    for port in candidates:
        if port not in used:
            return port
    raise NoPortsAvailable(f"no free port in {candidates.start}-{candidates.stop - 1}")


def first_free_block(candidates: range, used: set[int], size: int) -> range:
    run_start = candidates.start
    for port in candidates:
        if port in used:
            run_start = port + 1
        elif port - run_start + 1 == size:
            return range(run_start, port + 1)
    raise NoPortsAvailable(
        f"no free block of {size} ports in {candidates.start}-{candidates.stop - 1}"
    )


def resized_block(candidates: range, used: set[int], current: range, size: int) -> range:
    """The block for a new size: from the same first port when it fits there, so the
    worker's ports stay put; else the first free block. `used` leaves out `current`."""
    in_place = range(current.start, current.start + size)
    fits = in_place.start in candidates and in_place[-1] in candidates
    if fits and used.isdisjoint(in_place):
        return in_place
    return first_free_block(candidates, used, size)


def host_has_room(host: SipHost, edition: int) -> bool:
    used = used_ports(host)
    ranges = host.port_ranges()
    try:
        first_free_port(ranges["sip"], used)
        first_free_port(ranges["callback"], used)
        first_free_block(ranges["media"], used, media_block_size(edition))
    except NoPortsAvailable:
        return False
    return True


def record_allocation(
    server: VirtualServer, purpose: PortAllocation.Purpose, ports: Iterable[int]
) -> None:
    PortAllocation.objects.bulk_create(
        PortAllocation(host_id=server.host_id, server=server, purpose=purpose, port=port)
        for port in ports
    )


def lock_host(host_id: int) -> SipHost:
    """Serialise allocations on one host until the caller's transaction ends."""
    return SipHost.objects.select_for_update().get(pk=host_id)
