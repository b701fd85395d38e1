"""What each feature code does, in plain words, for the feature codes page.

The codes themselves are the engine's (`sipnodes.engine.config.FeatureCodes`, renamed
per server by `FeatureCode` rows); only their names and explanations live here, one
for each of the engine's `FEATURES` (tests/sipnodes/test_features.py checks that).
"""

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

# Each feature's name, and how to use it: `%(code)s` is the server's current code.
FEATURE_TEXTS: dict[str, tuple[Promise, Promise]] = {
    "forward_unconditional": (
        _("Forward all calls"),
        _(
            "Every call to you goes to another number. Dial %(code)s*number to set it "
            "(for example %(code)s*202), %(code)s# to stop it."
        ),
    ),
    "forward_busy": (
        _("Forward when busy"),
        _(
            "Calls that arrive while you are on a call, or on do not disturb, go to another "
            "number. Dial %(code)s*number to set it, %(code)s# to stop it."
        ),
    ),
    "forward_no_answer": (
        _("Forward when not answered"),
        _(
            "Calls you do not answer within your ring time go to another number. "
            "Dial %(code)s*number to set it, %(code)s# to stop it."
        ),
    ),
    "forward_unreachable": (
        _("Forward when unreachable"),
        _(
            "Calls that reach none of your phones (none registered, or none responds) go to "
            "another number. Dial %(code)s*number to set it, %(code)s# to stop it."
        ),
    ),
    "dnd_on": (
        _("Do not disturb on"),
        _(
            "Dial %(code)s: your phones stop ringing; callers hear busy, or go to your "
            "busy forwarding number."
        ),
    ),
    "dnd_off": (
        _("Do not disturb off"),
        _("Dial %(code)s: your phones ring again."),
    ),
    "group_pickup": (
        _("Group pickup"),
        _("Dial %(code)s to answer a call ringing at another user of your pickup group."),
    ),
    "directed_pickup": (
        _("Directed pickup"),
        _(
            "Dial %(code)s followed by a number (for example %(code)s201) to answer the call "
            "ringing at that user."
        ),
    ),
}
