"""The operator's second factor: verify, enrol (authenticator app), recovery codes.

Verify and enrol are open to an operator whose session is not verified yet (that is what
they are for); the second-factor page and new recovery codes need a verified session, like
every other operator page. Anyone but staff gets 404, as on the other operator pages.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from ops import second_factor
from ops.forms import SecondFactorCodeForm
from ops.views import staff_only


def operator_unverified(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff only, verified or not yet."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not (request.user.is_authenticated and request.user.is_staff):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper


def _refuse(form: SecondFactorCodeForm, locked_until: object) -> None:
    if locked_until is not None:
        seconds = second_factor.locked_for_seconds(locked_until)
        form.add_error(
            "code",
            ngettext(
                "Too many wrong codes: wait %(seconds)d second, then try again.",
                "Too many wrong codes: wait %(seconds)d seconds, then try again.",
                seconds,
            )
            % {"seconds": seconds},
        )
    else:
        form.add_error("code", _("This code is wrong, or it has been used already."))


@operator_unverified
@never_cache
@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    user = request.user
    target = second_factor.safe_next(request)
    if user.is_verified():
        return redirect(target or reverse("ops:hosts"))
    if not second_factor.has_second_factor(user):
        return redirect(second_factor.with_next(reverse("ops:second-factor-enrol"), target))
    form = SecondFactorCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = second_factor.verify(user, form.cleaned_data["code"])
        if result.device is not None:
            second_factor.session_verify(request, result.device)
            if result.recovery_code_used:
                left = second_factor.recovery_codes_left(user)
                messages.warning(
                    request,
                    ngettext(
                        "Recovery code accepted; it will not work again. %(count)d recovery "
                        "code left: make new ones on the Second factor page.",
                        "Recovery code accepted; it will not work again. %(count)d recovery "
                        "codes left: make new ones on the Second factor page.",
                        left,
                    )
                    % {"count": left},
                )
                if second_factor.authenticator(user) is None:
                    return redirect(
                        second_factor.with_next(reverse("ops:second-factor-enrol"), target)
                    )
            return redirect(target or reverse("ops:hosts"))
        _refuse(form, result.locked_until)
    return render(request, "ops/second_factor_verify.html", {"form": form, "next": target})


@operator_unverified
@never_cache
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator app: the key as a QR code and as text, then a first code.

    An operator who has a second factor already must verify first; the new authenticator
    replaces the old one only once it is confirmed.
    """
    user = request.user
    target = second_factor.safe_next(request)
    if second_factor.has_second_factor(user) and not user.is_verified():
        return redirect(second_factor.with_next(reverse("ops:second-factor-verify"), target))
    device = second_factor.enrolment_device(user)
    form = SecondFactorCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        allowed, info = device.verify_is_allowed()
        codes = (
            second_factor.confirm_enrolment(user, device, form.cleaned_data["code"])
            if allowed
            else None
        )
        if codes is not None:
            second_factor.session_verify(request, device)
            request.session[second_factor.FRESH_CODES_SESSION_KEY] = codes
            messages.success(request, _("Your authenticator is set up."))
            return redirect(second_factor.with_next(reverse("ops:second-factor"), target))
        _refuse(form, None if allowed else info["locked_until"])
    return render(
        request,
        "ops/second_factor_enrol.html",
        {
            "form": form,
            "next": target,
            "replacing": second_factor.authenticator(user) is not None,
            "secret": second_factor.secret_text(device),
            # segno's SVG: the address is only in the drawn modules, never as text.
            "qr_code": mark_safe(second_factor.qr_code_svg(device)),
            "uri": device.config_url,
        },
    )


@staff_only
@never_cache
@require_safe
def overview(request: HttpRequest) -> HttpResponse:
    """The operator's authenticator and recovery codes; fresh codes are shown here, once."""
    return render(
        request,
        "ops/second_factor.html",
        {
            "authenticator": second_factor.authenticator(request.user),
            "codes_left": second_factor.recovery_codes_left(request.user),
            "fresh_codes": request.session.pop(second_factor.FRESH_CODES_SESSION_KEY, None),
            "next": second_factor.safe_next(request) or reverse("ops:hosts"),
        },
    )


@staff_only
@require_POST
def recovery_codes(request: HttpRequest) -> HttpResponse:
    """New recovery codes; every earlier one stops working."""
    codes = second_factor.new_recovery_codes(request.user)
    request.session[second_factor.FRESH_CODES_SESSION_KEY] = codes
    messages.success(request, _("New recovery codes made: the earlier ones no longer work."))
    return redirect("ops:second-factor")
