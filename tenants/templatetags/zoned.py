"""`{{ time|zoned }}`: a stored time on the viewer's clock, with the zone named."""

from datetime import datetime

from django import template

from config.timezones import zoned_datetime

register = template.Library()


@register.filter
def zoned(value: datetime | None) -> str:
    return "" if value is None else zoned_datetime(value)
