"""Signup portal and tenant admin pages; the work happens in services and selectors."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views import i18n
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST, require_safe

from sipnodes import cdr_selectors, features_selectors, features_services, live_state
from sipnodes import selectors as sipnode_selectors
from sipnodes import services as sipnode_services
from sipnodes.credentials import new_callback_secret
from sipnodes.models import LocalUser, VirtualServer
from sipnodes.services import NoHostAvailable, PortInUse
from tenants import exports, selectors, services
from tenants.forms import (
    AccountForm,
    CallbackSettingsForm,
    CallSettingsForm,
    CdrFilterForm,
    FeatureCodesForm,
    HuntGroupForm,
    LocalUserForm,
    SignupForm,
    SystemSettingsForm,
)
from tenants.models import User


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
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
        sipnode_services.server_update_settings(server=server, **form.cleaned_data)
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


def _member_server_then_close(user: User, pk: int) -> VirtualServer:
    """The member's server; the database connection is closed after, as the stream that
    follows may stay open for hours and must not hold a connection all that time."""
    try:
        return selectors.get_member_server(user, pk)
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
    server = await sync_to_async(_member_server_then_close)(user, pk)
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
