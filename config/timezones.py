"""Time zones: which names a tenant may choose, and how the portal writes a time.

Times are stored in UTC; a page shows them in the zone the request activated (the
viewer's tenant zone, `config.middleware`), always with that zone's name beside them, so
a reader never has to guess which clock a time is on.
"""

import functools
import zoneinfo
from datetime import datetime

from django.utils import timezone

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@functools.cache
def time_zone_names() -> frozenset[str]:
    """IANA names zoneinfo can load, aliases included: browsers still report some of them
    (Chromium says Asia/Calcutta)."""
    return frozenset(zoneinfo.available_timezones())


def is_time_zone(name: str) -> bool:
    return name in time_zone_names()


def zoned_datetime(value: datetime) -> str:
    """`value` on the active zone's clock, followed by the zone's name."""
    zone = timezone.get_current_timezone()
    return f"{timezone.localtime(value, zone):{DATETIME_FORMAT}} {zone}"
