"""Signup portal and tenant admin pages; the work happens in services and selectors."""

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views import i18n
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST, require_safe

from sipnodes import (
    branch_selectors,
    branch_services,
    cdr_selectors,
    features_selectors,
    features_services,
    live_state,
    trunk_selectors,
    trunk_services,
    upnp_selectors,
    webphone_services,
)
from sipnodes import selectors as sipnode_selectors
from sipnodes import services as sipnode_services
from sipnodes.credentials import new_callback_secret
from sipnodes.models import BranchNetwork, LocalUser, VirtualServer
from sipnodes.services import NoHostAvailable, PortInUse
from tenants import exports, selectors, services, throttle
from tenants.forms import (
    AccountForm,
    BranchNetworkForm,
    CallbackSettingsForm,
    CallSettingsForm,
    CdrFilterForm,
    DialRuleForm,
    ExternalLineForm,
    FeatureCodesForm,
    HuntGroupForm,
    LocalUserForm,
    SignupForm,
    SystemSettingsForm,
    TrunkForm,
)
from tenants.models import Tenant, User

T = TypeVar("T")


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST":
        # Every submission counts, whether it succeeds or not (docs/security.md).
        address = throttle.client_address(request)
        limits = [throttle.Limit(throttle.SIGNUP_ADDRESS, address)] if address else []
        until = throttle.refused_until(limits)
        if until is not None:
            message = _("Too many sign-ups from your address. Please try again in %(wait)s.") % {
                "wait": throttle.wait_text(until)
            }
            return render(
                request,
                "tenants/signup.html",
                {
                    "form": SignupForm(
                        initial={k: request.POST.get(k) for k in ("email", "company_name")}
                    ),
                    "throttle_message": message,
                },
                status=429,
            )
        throttle.count(limits)
    if request.method == "POST" and form.is_valid():
        try:
            result = services.tenant_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                company_name=form.cleaned_data["company_name"],
                language=translation.get_language(),
                time_zone=form.cleaned_data["time_zone"],
            )
        except NoHostAvailable:
            form.add_error(None, _("We cannot create new servers right now. Please try later."))
            return render(request, "tenants/signup.html", {"form": form}, status=503)
        services.send_verification_email(
            user=result.user, base_url=request.build_absolute_uri("/").rstrip("/")
        )
        login(request, result.user, backend="django.contrib.auth.backends.ModelBackend")
        # This response was begun before anyone was logged in: show it in the new tenant's zone.
        timezone.activate(result.tenant.time_zone)
        # The passwords are shown in this response only; nothing keeps them.
        return render(
            request,
            "tenants/welcome.html",
            {"server": result.server, "passwords": result.passwords},
        )
    return render(request, "tenants/signup.html", {"form": form})


def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    try:
        services.user_verify_email(token=token)
    except services.InvalidVerificationLink as exc:
        return render(request, "tenants/verify_failed.html", {"error": exc}, status=400)
    messages.success(request, _("Your e-mail address is verified."))
    return redirect("tenants:server-list")


@login_required
@require_safe
def server_list(request: HttpRequest) -> HttpResponse:
    servers = selectors.member_servers(request.user)
    return render(request, "tenants/server_list.html", {"servers": servers})


@login_required
@require_safe
def server_detail(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk)
    return render(
        request,
        "tenants/server_detail.html",
        {
            "server": server,
            "user_rows": [
                (user, features_selectors.call_settings_summary(user=user))
                for user in sipnode_selectors.server_local_users(server=server)
            ],
            "clients": sipnode_selectors.server_clients(server=server),
            "trunks": trunk_selectors.server_trunks(server=server),
            "blocked": live_state.blocked_sources(server_uid=server.uid),
            "upnp": upnp_selectors.server_upnp(server=server),
            "can_change": selectors.membership(request.user, server).can_change,
            "power_actions": [
                ("start", _("Start")),
                ("stop", _("Stop")),
                ("restart", _("Restart")),
            ],
        },
    )


@login_required
def server_settings(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk, change=request.method == "POST")
    form = SystemSettingsForm(request.POST or None, instance=server)
    if request.method == "POST" and form.is_valid():
        values = dict(form.cleaned_data)
        values.pop("confirm")  # the out-group prefix's warning, seen (SystemSettingsForm)
        sipnode_services.server_update_settings(server=server, **values)
        messages.success(request, _("Settings saved."))
        return redirect(server)
    return render(request, "tenants/server_settings.html", {"server": server, "form": form})


@sensitive_post_parameters("new_secret")
@login_required
def server_callback(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk, change=request.method == "POST")
    initial = {
        "app_server_address": server.callback_app_server_address,
        "port": server.callback_port,
        "default_caller": server.callback_default_caller,
    }
    form = CallbackSettingsForm(
        request.POST or None, initial=initial, has_secret=bool(server.callback_secret)
    )
    if request.method == "POST" and form.is_valid():
        action = form.cleaned_data.pop("secret_action") or form.KEEP
        pasted = form.cleaned_data.pop("new_secret")
        secret = {
            form.KEEP: None,
            form.GENERATE: new_callback_secret(),
            form.PASTE: pasted,
            form.CLEAR: "",
        }[action]
        try:
            sipnode_services.server_update_callback(
                server=server, secret=secret, **form.cleaned_data
            )
        except PortInUse as exc:
            form.add_error("port", str(exc))
        else:
            if action == form.GENERATE:  # shown this once, as a new SIP password is
                context = {"server": server, "secret": secret}
                return render(request, "tenants/callback_secret_issued.html", context)
            messages.success(request, _("Call-back settings saved."))
            return redirect(server)
    return render(request, "tenants/server_callback.html", {"server": server, "form": form})


@login_required
def local_user_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, server_pk, change=True)
    form = LocalUserForm(request.POST or None, server=server)
    if request.method == "POST" and form.is_valid():
        try:
            user, issued = sipnode_services.local_user_create(server=server, **form.cleaned_data)
        except ValidationError as exc:  # the number was taken since the form checked it
            form.add_error(None, exc)
        else:
            return render(
                request, "tenants/password_issued.html", {"server": server, "issued": issued}
            )
    return render(request, "tenants/local_user_form.html", {"server": server, "form": form})


@login_required
def local_user_edit(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    user = selectors.get_member_local_user(request.user, server_pk, pk, change=True)
    form = LocalUserForm(request.POST or None, instance=user, server=user.server)
    if request.method == "POST" and form.is_valid():
        sipnode_services.local_user_update(
            user=user,
            display_name=form.cleaned_data["display_name"],
            call_level=form.cleaned_data["call_level"],
        )
        messages.success(request, _("User %(number)s saved.") % {"number": user.number})
        return redirect(user.server)
    return render(
        request,
        "tenants/local_user_form.html",
        {"server": user.server, "form": form, "local_user": user},
    )


@login_required
@require_POST
def local_user_delete(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    user = selectors.get_member_local_user(request.user, server_pk, pk, change=True)
    sipnode_services.local_user_delete(user=user)
    messages.success(request, _("User %(number)s deleted.") % {"number": user.number})
    return redirect(user.server)


@login_required
@require_POST
def local_user_reset_password(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    user = selectors.get_member_local_user(request.user, server_pk, pk, change=True)
    issued = sipnode_services.local_user_reset_password(user=user)
    return render(
        request, "tenants/password_issued.html", {"server": user.server, "issued": issued}
    )


@login_required
def local_user_call_settings(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    user = selectors.get_member_local_user(request.user, server_pk, pk, change=True)
    form = CallSettingsForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        values = {name: form.cleaned_data[name] for name in features_services.CALL_SETTINGS}
        try:
            features_services.local_user_update_call_settings(
                user=user, seen_changed=form.cleaned_data["seen_changed"], **values
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        except features_services.CallSettingsChangedMeanwhile:
            form = _call_settings_changed_meanwhile(request, user)
        else:
            messages.success(
                request, _("Call settings of user %(number)s saved.") % {"number": user.number}
            )
            return redirect(user.server)
    return render(
        request,
        "tenants/call_settings.html",
        {"server": user.server, "form": form, "local_user": user},
    )


def _call_settings_changed_meanwhile(request: HttpRequest, user: LocalUser) -> CallSettingsForm:
    """The form again with what was typed, now based on the settings in force, which the
    error shows: saving once more puts the typed ones in their place."""
    user.refresh_from_db()
    in_force = features_selectors.call_settings_summary(user=user)
    data = request.POST.copy()
    data["seen_changed"] = CallSettingsForm(instance=user)["seen_changed"].initial
    form = CallSettingsForm(data, instance=user)
    form.is_valid()
    form.add_error(
        None,
        _(
            "DND or forwarding of user %(number)s changed while this page was open, from a "
            "phone or another page. In force now: %(settings)s. Save again to replace them "
            "with the settings below."
        )
        % {"number": user.number, "settings": in_force},
    )
    return form


@login_required
@require_safe
def hunt_group_list(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk)
    return render(
        request,
        "tenants/hunt_group_list.html",
        {
            "server": server,
            "groups": features_selectors.server_hunt_groups(server=server),
            "can_change": selectors.membership(request.user, server).can_change,
        },
    )


@login_required
def hunt_group_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, server_pk, change=True)
    form = HuntGroupForm(request.POST or None, server=server)
    if request.method == "POST" and form.is_valid():
        values = dict(form.cleaned_data)
        try:
            group = features_services.hunt_group_create(
                server=server, members=values.pop("members"), **values
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Hunt group %(number)s saved.") % {"number": group.number})
            return redirect("tenants:hunt-group-list", server.pk)
    return render(request, "tenants/hunt_group_form.html", {"server": server, "form": form})


@login_required
def hunt_group_edit(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    group = selectors.get_member_hunt_group(request.user, server_pk, pk, change=True)
    number = group.number  # as saved: the form puts what was typed on `group`
    form = HuntGroupForm(request.POST or None, instance=group, server=group.server)
    if request.method == "POST" and form.is_valid():
        values = dict(form.cleaned_data)
        try:
            features_services.hunt_group_update(
                group=group, members=values.pop("members"), **values
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Hunt group %(number)s saved.") % {"number": group.number})
            return redirect("tenants:hunt-group-list", group.server.pk)
    return render(
        request,
        "tenants/hunt_group_form.html",
        {"server": group.server, "form": form, "group": group, "number": number},
    )


@login_required
@require_POST
def hunt_group_delete(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    group = selectors.get_member_hunt_group(request.user, server_pk, pk, change=True)
    features_services.hunt_group_delete(group=group)
    messages.success(request, _("Hunt group %(number)s deleted.") % {"number": group.number})
    return redirect("tenants:hunt-group-list", group.server.pk)


@login_required
def feature_codes(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk, change=request.method == "POST")
    if request.method == "POST" and "reset" in request.POST:
        features_services.feature_codes_reset(server=server)
        messages.success(request, _("Every feature has its default code again."))
        return redirect("tenants:feature-codes", server.pk)
    codes = features_selectors.server_feature_codes(server=server)
    form = FeatureCodesForm(request.POST or None, codes=codes)
    if request.method == "POST" and form.is_valid():
        try:
            features_services.feature_codes_rename(server=server, codes=form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Feature codes saved."))
            return redirect("tenants:feature-codes", server.pk)
    return render(
        request,
        "tenants/feature_codes.html",
        {
            "server": server,
            "rows": [
                (row, form[row.feature])
                for row in features_selectors.feature_code_rows(server=server)
            ],
            "form": form,
            "can_change": selectors.membership(request.user, server).can_change,
        },
    )


@login_required
def trunk_list(request: HttpRequest, pk: int) -> HttpResponse:
    """The trunks with their state; a POST chooses the external line."""
    server = selectors.get_member_server(request.user, pk, change=request.method == "POST")
    form = ExternalLineForm(request.POST or None, server=server)
    if request.method == "POST" and form.is_valid():
        try:
            trunk_services.server_set_external_line(
                server=server, trunk=form.cleaned_data["external_line"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("External line saved."))
            return redirect("tenants:trunk-list", server.pk)
    return _trunk_list_page(request, server, form)


def _trunk_list_page(
    request: HttpRequest,
    server: VirtualServer,
    form: ExternalLineForm,
    refused: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "tenants/trunk_list.html",
        {
            "server": server,
            "trunks": trunk_selectors.server_trunks(server=server),
            "form": form,
            "refused": refused,
            "can_change": selectors.membership(request.user, server).can_change,
        },
        status=status,
    )


def _trunk_values(form: TrunkForm) -> dict[str, object]:
    """The trunk's fields from its form; the password and DIDs go separately."""
    return {name: form.cleaned_data[name] for name in trunk_services.TRUNK_FIELDS}


@sensitive_post_parameters("password")
@login_required
def trunk_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, server_pk, change=True)
    form = TrunkForm(request.POST or None, server=server)
    if request.method == "POST" and form.is_valid():
        try:
            trunk = trunk_services.trunk_create(
                server=server,
                password=form.password_change() or "",
                dids=form.cleaned_data["dids"],
                **_trunk_values(form),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Trunk %(name)s saved.") % {"name": trunk.name})
            return redirect("tenants:trunk-list", server.pk)
    return render(request, "tenants/trunk_form.html", {"server": server, "form": form})


@sensitive_post_parameters("password")
@login_required
def trunk_edit(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    trunk = selectors.get_member_trunk(request.user, server_pk, pk, change=True)
    name = trunk.name  # as saved: the form puts what was typed on `trunk`
    form = TrunkForm(request.POST or None, instance=trunk, server=trunk.server)
    if request.method == "POST" and form.is_valid():
        try:
            trunk_services.trunk_update(
                trunk=trunk,
                password=form.password_change(),
                dids=form.cleaned_data["dids"],
                **_trunk_values(form),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Trunk %(name)s saved.") % {"name": trunk.name})
            return redirect("tenants:trunk-list", trunk.server.pk)
    return render(
        request,
        "tenants/trunk_form.html",
        {"server": trunk.server, "form": form, "trunk": trunk, "name": name},
    )


@login_required
@require_POST
def trunk_delete(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    trunk = selectors.get_member_trunk(request.user, server_pk, pk, change=True)
    try:
        trunk_services.trunk_delete(trunk=trunk)
    except ValidationError as exc:  # rules still use it: the list says which
        form = ExternalLineForm(server=trunk.server)
        return _trunk_list_page(request, trunk.server, form, " ".join(exc.messages), 409)
    messages.success(request, _("Trunk %(name)s deleted.") % {"name": trunk.name})
    return redirect("tenants:trunk-list", trunk.server.pk)


@login_required
@require_safe
def dial_rule_list(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk)
    return _dial_rule_list_page(request, server)


def _dial_rule_list_page(
    request: HttpRequest, server: VirtualServer, refused: str = "", status: int = 200
) -> HttpResponse:
    return render(
        request,
        "tenants/dial_rule_list.html",
        {
            "server": server,
            "rules": trunk_selectors.server_dial_rules(server=server),
            "refused": refused,
            "can_change": selectors.membership(request.user, server).can_change,
        },
        status=status,
    )


def _rule_values(form: DialRuleForm) -> dict[str, object]:
    return {name: form.cleaned_data[name] for name in trunk_services.DIAL_RULE_FIELDS}


@login_required
def dial_rule_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, server_pk, change=True)
    form = DialRuleForm(request.POST or None, server=server)
    if request.method == "POST" and form.is_valid():
        try:
            rule = trunk_services.dial_rule_create(
                server=server, confirmed=form.cleaned_data["confirm"], **_rule_values(form)
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Rule for %(prefix)s saved.") % {"prefix": rule.prefix})
            return redirect("tenants:dial-rule-list", server.pk)
    return render(request, "tenants/dial_rule_form.html", {"server": server, "form": form})


@login_required
def dial_rule_edit(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    rule = selectors.get_member_dial_rule(request.user, server_pk, pk, change=True)
    prefix = rule.prefix  # as saved
    form = DialRuleForm(request.POST or None, instance=rule, server=rule.server)
    if request.method == "POST" and form.is_valid():
        try:
            trunk_services.dial_rule_update(
                rule=rule, confirmed=form.cleaned_data["confirm"], **_rule_values(form)
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Rule for %(prefix)s saved.") % {"prefix": rule.prefix})
            return redirect("tenants:dial-rule-list", rule.server.pk)
    return render(
        request,
        "tenants/dial_rule_form.html",
        {"server": rule.server, "form": form, "rule": rule, "prefix": prefix},
    )


@login_required
@require_POST
def dial_rule_delete(request: HttpRequest, server_pk: int, pk: int) -> HttpResponse:
    rule = selectors.get_member_dial_rule(request.user, server_pk, pk, change=True)
    try:
        trunk_services.dial_rule_delete(rule=rule)
    except ValidationError as exc:  # a branch network's rule: the list says where to go
        return _dial_rule_list_page(request, rule.server, " ".join(exc.messages), 409)
    messages.success(request, _("Rule for %(prefix)s deleted.") % {"prefix": rule.prefix})
    return redirect("tenants:dial-rule-list", rule.server.pk)


@login_required
@require_safe
def branch_network_list(request: HttpRequest) -> HttpResponse:
    """The member's tenant's branch networks (the tenant of the account page)."""
    tenant = selectors.get_member_tenant(request.user)
    return render(
        request,
        "tenants/branch_network_list.html",
        {
            "networks": branch_selectors.tenant_branch_networks(tenant=tenant),
            "can_change": selectors.can_change_tenant(request.user, tenant),
        },
    )


def _branch_network_form(
    request: HttpRequest, form: BranchNetworkForm, tenant: Tenant, network: BranchNetwork | None
) -> HttpResponse | None:
    """Saves a valid posted form through the service; None: show the form (again)."""
    if request.method != "POST" or not form.is_valid():
        return None
    values = {
        "name": form.cleaned_data["name"],
        "trunk_server": form.cleaned_data["trunk_server"],
        "members": form.members(),
        "confirmed": form.cleaned_data["confirm"],
    }
    try:
        if network is None:
            network = branch_services.branch_network_create(tenant=tenant, **values)
        else:
            branch_services.branch_network_update(network=network, **values)
    except ValidationError as exc:
        form.add_error(None, exc)
        return None
    messages.success(request, _("Branch network %(name)s saved.") % {"name": network.name})
    return redirect("tenants:branch-network-list")


@login_required
def branch_network_create(request: HttpRequest) -> HttpResponse:
    tenant = selectors.get_member_tenant(request.user)
    if not selectors.can_change_tenant(request.user, tenant):
        raise PermissionDenied("viewers cannot add branch networks")
    form = BranchNetworkForm(request.POST or None, tenant=tenant)
    return _branch_network_form(request, form, tenant, None) or render(
        request, "tenants/branch_network_form.html", {"form": form}
    )


@login_required
def branch_network_edit(request: HttpRequest, pk: int) -> HttpResponse:
    network = selectors.get_member_branch_network(request.user, pk, change=True)
    name = network.name  # as saved
    form = BranchNetworkForm(request.POST or None, tenant=network.tenant, network=network)
    return _branch_network_form(request, form, network.tenant, network) or render(
        request,
        "tenants/branch_network_form.html",
        {"form": form, "network": network, "name": name},
    )


@login_required
@require_POST
def branch_network_delete(request: HttpRequest, pk: int) -> HttpResponse:
    network = selectors.get_member_branch_network(request.user, pk, change=True)
    branch_services.branch_network_delete(network=network)
    messages.success(request, _("Branch network %(name)s deleted.") % {"name": network.name})
    return redirect("tenants:branch-network-list")


@login_required
@require_POST
def server_power(request: HttpRequest, pk: str, action: str) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk, change=True)
    if action == "restart":
        sipnode_services.server_restart(server=server)
        done = _("Asked the host to restart %(server)s.")
    elif action == "start":
        sipnode_services.server_set_desired_state(server=server, state=VirtualServer.State.RUNNING)
        done = _("Asked the host to start %(server)s.")
    else:
        sipnode_services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)
        done = _("Asked the host to stop %(server)s.")
    messages.success(request, done % {"server": server.name})
    return redirect(server)


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The language switcher: Django's view sets the cookie and goes back; a member's
    choice is also kept in their profile, for their other browsers and their e-mails."""
    response = i18n.set_language(request)
    language = request.POST.get("language", "")
    if request.user.is_authenticated and language in dict(settings.LANGUAGES):
        services.user_set_language(user=request.user, language=language)
    return response


@login_required
def account(request: HttpRequest) -> HttpResponse:
    tenant = selectors.get_member_tenant(request.user)
    can_change = selectors.can_change_tenant(request.user, tenant)
    form = AccountForm(
        request.POST or None, initial={"time_zone": tenant.time_zone}, can_change=can_change
    )
    if request.method == "POST" and form.is_valid():
        if not can_change:
            raise PermissionDenied(_("Viewers cannot change the account settings."))
        services.tenant_set_time_zone(tenant=tenant, time_zone=form.cleaned_data["time_zone"])
        messages.success(request, _("Account settings saved."))
        return redirect("tenants:account")
    return render(
        request, "tenants/account.html", {"tenant": tenant, "form": form, "can_change": can_change}
    )


# The two CDR tables: whether each shows the answered calls or the others.
CDR_TABLES = {"basic": True, "failed": False}


@login_required
@require_safe
def cdr_table(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk)
    form = CdrFilterForm(request.GET or None)
    page = cdr_selectors.cdr_page(
        server=server,
        answered=CDR_TABLES[kind],
        cdr_filter=form.cdr_filter(timezone.get_current_timezone()),
        after=cdr_selectors.Cursor.parse(request.GET.get("after", "")),
        before=cdr_selectors.Cursor.parse(request.GET.get("before", "")),
    )
    query = request.GET.copy()
    for name in ("after", "before"):
        query.pop(name, None)
    return render(
        request,
        "tenants/cdr_table.html",
        {
            "server": server,
            "kind": kind,
            "form": form,
            "page": page,
            "rows": exports.cdr_rows(page.cdrs),
            "filter_query": query.urlencode(),
            "zone": timezone.get_current_timezone_name(),
            "retention_days": cdr_selectors.cdr_retention_days()[server.edition],
        },
    )


@login_required
@require_safe
async def cdr_export(request: HttpRequest, pk: int, kind: str) -> StreamingHttpResponse:
    """The filtered table as CSV, written while it is read: batches by keyset, never the
    whole table in memory (served by an ASGI server, as the platform's gunicorn is)."""
    user = await request.auser()
    server = await sync_to_async(selectors.get_member_server)(user, pk)
    form = CdrFilterForm(request.GET or None)
    zone = timezone.get_current_timezone()
    rows = exports.cdr_csv(
        server=server,
        answered=CDR_TABLES[kind],
        cdr_filter=form.cdr_filter(zone),
        zone=zone,
    )
    filename = f"{kind}-calls-server{server.pk}-{timezone.localdate(timezone=zone)}.csv"
    return StreamingHttpResponse(
        rows,
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@login_required
@require_safe
def live_calls(request: HttpRequest, pk: int) -> HttpResponse:
    server = selectors.get_member_server(request.user, pk)
    return render(
        request,
        "tenants/live_calls.html",
        {
            "server": server,
            "can_change": selectors.membership(request.user, server).can_change,
            "showing": server.cdr_realtime_display and server.cdr_failed_calls,
        },
    )


def _then_close(read: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`read(*args, **kwargs)`, then the database connection closed: the async view that
    follows (a stream, a wait on the gateway) may last hours and must not hold it."""
    try:
        return read(*args, **kwargs)
    finally:
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:  # in tests: the test's own transaction
                connection.close()


@login_required
@require_safe
async def live_calls_events(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """Server-Sent Events: the calls in progress, then each change as the worker publishes
    it. A browser that reconnects (EventSource does, after `retry` ms) gets the calls in
    progress again and so catches up."""
    user = await request.auser()
    server = await sync_to_async(_then_close)(selectors.get_member_server, user, pk)
    response = StreamingHttpResponse(
        _live_events(str(server.uid)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold events back
    return response


async def _live_events(server_uid: str) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    async for update in live_state.live_calls_follow(server_uid=server_uid):
        if update.calls is not None:
            yield f"event: snapshot\ndata: {update.as_json}\n\n"
        elif update.changes is not None:
            yield f"event: changes\ndata: {update.as_json}\n\n"
        else:
            yield ": still here\n\n"


@login_required
@require_safe
def web_phone(request: HttpRequest, pk: int) -> HttpResponse:
    """The web phone page of one local user (`?user=<id>`), or the choice of one.

    Owners and admins only: the page calls as the user, through the dial plan and its
    trunks, which is more than a viewer may do."""
    server = selectors.get_member_server(request.user, pk, change=True)
    chosen = request.GET.get("user", "")
    local_user = None
    if chosen.isdigit():
        local_user = selectors.get_member_local_user(request.user, pk, int(chosen), change=True)
    return render(
        request,
        "tenants/web_phone.html",
        {
            "server": server,
            "users": sipnode_selectors.server_local_users(server=server),
            "local_user": local_user,
        },
    )


def _phone_user(user: User, pk: int, user_pk: str) -> LocalUser:
    """The local user a member may use the web phone as (404, or 403 for a viewer), with its
    server and host."""
    server = selectors.get_member_server(user, pk, change=True)
    if not user_pk.isdigit():
        raise Http404("no such user")
    local_user = selectors.get_member_local_user(user, pk, int(user_pk))
    local_user.server = server
    return local_user


@login_required
@require_POST
async def web_phone_open(request: HttpRequest, pk: int) -> JsonResponse:
    """Open a web phone session: the server's gateway registers the chosen local user."""
    user = await request.auser()
    local_user = await sync_to_async(_then_close)(
        _phone_user, user, pk, request.POST.get("user", "")
    )
    try:
        session_id, answer = await webphone_services.webphone_open(
            server=local_user.server, local_user=local_user, member_id=user.pk
        )
    except webphone_services.GatewayUnavailable:
        return JsonResponse({"ok": False, "error": _("The web phone service did not answer.")})
    if not answer.get("ok"):
        message = _("The server refused to register %(number)s: %(reason)s") % {
            "number": local_user.number,
            "reason": answer.get("error", ""),
        }
        return JsonResponse({"ok": False, "error": message})
    return JsonResponse({"ok": True, "session": session_id})


@login_required
@require_POST
async def web_phone_action(request: HttpRequest, pk: int, session: str) -> JsonResponse:
    """One action of the page on its session; another member's session is a 404."""
    user = await request.auser()
    # the server, if the member may use its web phone (owners, admins)
    await sync_to_async(_then_close)(selectors.get_member_server, user, pk, change=True)
    arguments = {k: request.POST[k] for k in ("sdp", "number") if k in request.POST}
    try:
        answer = await webphone_services.webphone_act(
            server_id=pk,
            session_id=session,
            member_id=user.pk,
            action=request.POST.get("action", ""),
            **arguments,
        )
    except webphone_services.SessionNotFound as exc:
        raise Http404("no such web phone session") from exc
    except webphone_services.GatewayUnavailable:
        return JsonResponse({"ok": False, "error": _("The web phone service did not answer.")})
    answer.pop("boot", None)
    return JsonResponse(answer)


@login_required
@require_safe
async def web_phone_events(request: HttpRequest, pk: int, session: str) -> StreamingHttpResponse:
    """Server-Sent Events of one session: its state, each change, and `lost` when its
    gateway went away. While this stream is open the session stays alive."""
    user = await request.auser()
    # the server, if the member may use its web phone (owners, admins)
    await sync_to_async(_then_close)(selectors.get_member_server, user, pk, change=True)
    updates = webphone_services.webphone_follow(server_id=pk, session_id=session, member_id=user.pk)
    try:
        first = await anext(updates, None)
    except webphone_services.SessionNotFound as exc:
        raise Http404("no such web phone session") from exc
    response = StreamingHttpResponse(
        _web_phone_stream(first, updates), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold events back
    return response


async def _web_phone_stream(
    first: webphone_services.Update | None, updates: AsyncIterator[webphone_services.Update]
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    if first is None:
        return
    yield f"event: {first.kind}\ndata: {json.dumps(first.data)}\n\n"
    async for update in updates:
        if update.kind == "ping":
            yield ": still here\n\n"
        else:
            yield f"event: {update.kind}\ndata: {json.dumps(update.data)}\n\n"
