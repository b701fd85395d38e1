"""A CDR's FCI in plain words: what its callTag and its Q.850 cause mean.

callTag: the meaning is the docstring of the engine's `CallTag` member
(`sipnodes/engine/cdr.py`), translated; `sipnodes/management/commands/makemessages.py`
puts those docstrings in the catalogue, so there is no second copy of them here.
cause: the names of ITU-T Q.850, which the engine only numbers
(`STATUS_TO_CAUSE` and its constants); every cause it can give has a name here
(tests/sipnodes/test_cdr_texts.py).
"""

from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from sipnodes.engine.cdr import CallTag

Q850_CAUSES: dict[int, Promise] = {
    1: _("Unallocated number: no such number"),
    2: _("No route to the transit network"),
    3: _("No route to the destination"),
    4: _("Special information tone sent"),
    5: _("Misdialled trunk prefix"),
    6: _("Channel unacceptable"),
    7: _("Call delivered in an established channel"),
    8: _("Pre-emption"),
    9: _("Pre-emption: circuit reserved for reuse"),
    16: _("Normal call clearing: someone hung up"),
    17: _("User busy"),
    18: _("No user responding: the phone did not react"),
    19: _("No answer: the phone rang but nobody answered"),
    20: _("Subscriber absent"),
    21: _("Call rejected"),
    22: _("Number changed"),
    23: _("Redirected to a new destination"),
    25: _("Exchange routing error (too many hops)"),
    26: _("Non-selected user clearing"),
    27: _("Destination out of order"),
    28: _("Invalid number format: incomplete number"),
    29: _("Facility rejected"),
    30: _("Response to a status enquiry"),
    31: _("Normal, unspecified"),
    34: _("No circuit or channel available"),
    38: _("Network out of order"),
    41: _("Temporary failure"),
    42: _("Switching equipment congestion"),
    43: _("Access information discarded"),
    44: _("Requested circuit or channel not available"),
    47: _("Resource unavailable, unspecified"),
    49: _("Quality of service not available"),
    50: _("Requested facility not subscribed"),
    55: _("Incoming calls barred within the closed user group"),
    57: _("Bearer capability not authorised"),
    58: _("Bearer capability not available now (media not acceptable)"),
    63: _("Service or option not available, unspecified"),
    65: _("Bearer capability not implemented"),
    66: _("Channel type not implemented"),
    69: _("Requested facility not implemented"),
    70: _("Only restricted digital information available"),
    79: _("Service or option not implemented, unspecified"),
    81: _("Invalid call reference value"),
    82: _("Identified channel does not exist"),
    83: _("No such suspended call"),
    84: _("Call identity in use"),
    85: _("No call suspended"),
    86: _("The requested suspended call has been cleared"),
    87: _("User not member of the closed user group"),
    88: _("Incompatible destination"),
    90: _("Closed user group does not exist"),
    91: _("Invalid transit network selection"),
    95: _("Invalid message, unspecified"),
    96: _("Mandatory information element missing"),
    97: _("Message type not implemented"),
    98: _("Message not compatible with the call state, or not implemented"),
    99: _("Information element not implemented"),
    100: _("Invalid information element contents"),
    101: _("Message not compatible with the call state"),
    102: _("Recovery on timer expiry: no answer in time"),
    103: _("Parameter not implemented, passed on"),
    110: _("Message with an unrecognised parameter discarded"),
    111: _("Protocol error, unspecified"),
    127: _("Interworking, unspecified"),
}


# The CDR's `route` and `released_by` values (`sipnodes.engine.events.CdrData`).
ROUTES: dict[str, Promise] = {
    "local_user": _("local user"),
    "external_line": _("external line"),
    "sip_trunk": _("SIP trunk"),
    "none": _("none"),
}
RELEASED_BY: dict[str, Promise] = {
    "caller": _("caller"),
    "callee": _("callee"),
    "server": _("server"),
}


def call_tag_text(value: int | None) -> str:
    """What a callTag means, in the active language."""
    try:
        doc = CallTag(value).__doc__
    except ValueError:
        doc = None
    if not doc:
        return gettext("Unknown callTag: this portal is older than the worker that wrote it.")
    return gettext(doc)


def cause_text(value: int | None) -> str:
    """The Q.850 name of a cause, in the active language."""
    name = Q850_CAUSES.get(value) if value is not None else None
    return str(name) if name is not None else gettext("Cause not defined by Q.850")


def cause_choices() -> list[tuple[int, str]]:
    """Every named cause, for the cause filter: `17 – User busy`."""
    return [(cause, f"{cause} – {name}") for cause, name in Q850_CAUSES.items()]
