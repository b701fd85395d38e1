"""The operator dashboards under /ops/: staff only; anyone else gets 404."""

from collections.abc import Callable
from functools import wraps

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from ops import selectors, services, tasks
from ops.forms import ExemptionForm, PolicyForm
from ops.models import Exemption, PurgeRun
from ops.second_factor import redirect_to_second_factor
from sipnodes import live_state

CANDIDATES_SHOWN = 100


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The pages do not exist for anyone but operators (Django staff).

    An operator's session must be verified with a second factor too; the middleware
    (ops.middleware) sends it to verification first, and this refuses it should it not.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not (request.user.is_authenticated and request.user.is_staff):
            raise Http404
        if not request.user.is_verified():
            return redirect_to_second_factor(request)
        return view(request, *args, **kwargs)

    return wrapper


def _report_errors(request: HttpRequest, form: forms.BaseForm) -> None:
    """A refused form's errors, shown on the purge page it redirects back to."""
    for error in form.errors.values():
        messages.error(request, " ".join(error))


def _after(request: HttpRequest) -> int | None:
    value = request.GET.get("after", "")
    return int(value) if value.isdigit() else None


@staff_only
@require_safe
def hosts(request: HttpRequest) -> HttpResponse:
    return render(request, "ops/hosts.html", {"hosts": selectors.hosts_overview()})


@staff_only
@require_safe
def tenants(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    page = selectors.tenants_page(query=query, after=_after(request))
    return render(request, "ops/tenants.html", {"page": page, "query": query})


@staff_only
@require_safe
def servers(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    tenant = request.GET.get("tenant", "")
    tenant_id = int(tenant) if tenant.isdigit() else None
    page = selectors.servers_page(query=query, tenant_id=tenant_id, after=_after(request))
    blocked = live_state.blocked_sources_of(server_uids=[s.uid for s in page.rows])
    rows = [(server, blocked[str(server.uid)]) for server in page.rows]
    context = {"page": page, "rows": rows, "query": query, "tenant_id": tenant_id}
    return render(request, "ops/servers.html", context)


@staff_only
@require_safe
def purge(request: HttpRequest) -> HttpResponse:
    policy = selectors.policy_get()
    now = timezone.now()
    return render(
        request,
        "ops/purge.html",
        {
            "policy": policy,
            "policy_form": PolicyForm(instance=policy),
            "exemption_form": ExemptionForm(),
            "zombie_count": selectors.zombie_count(policy=policy, now=now),
            "notices": selectors.notice_candidates(policy=policy, now=now, limit=CANDIDATES_SHOWN),
            "candidates": selectors.purge_candidates(
                policy=policy, now=now, limit=min(policy.cap_per_run, CANDIDATES_SHOWN)
            ),
            "parked": selectors.parked_servers()[:CANDIDATES_SHOWN],
            "runs": selectors.runs(),
            "exemptions": selectors.exemptions(),
            "changes": selectors.policy_changes(),
            "tombstones": selectors.tombstones(),
        },
    )


@staff_only
@require_POST
def run_start(request: HttpRequest) -> HttpResponse:
    """ "Dry run now" and "Run now": queue the task; its page shows the result when done."""
    with transaction.atomic():
        run = services.run_queue(
            trigger=PurgeRun.Trigger.OPERATOR,
            operator=request.user,
            dry_run=request.POST.get("dry_run") == "1",
        )
        tasks.run_purge.delay_on_commit(run.pk)
    return redirect(run)


@staff_only
@require_safe
def purge_run(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(run_id=pk)
    if run is None:
        raise Http404
    return render(
        request, "ops/purge_run.html", {"run": run, "items": selectors.run_items(run=run)}
    )


@staff_only
@require_POST
def policy(request: HttpRequest) -> HttpResponse:
    form = PolicyForm(request.POST, instance=selectors.policy_get())
    if form.is_valid():
        services.policy_update(operator=request.user, **form.cleaned_data)
        messages.success(request, _("Purge policy saved."))
    else:
        _report_errors(request, form)
    return redirect("ops:purge")


@staff_only
@require_POST
def exemption_add(request: HttpRequest) -> HttpResponse:
    form = ExemptionForm(request.POST)
    if form.is_valid():
        services.exemption_add(
            operator=request.user,
            reason=form.cleaned_data["reason"],
            server=form.cleaned_data.get("server"),
            tenant=form.cleaned_data.get("tenant"),
        )
        messages.success(request, _("Exemption added."))
    else:
        _report_errors(request, form)
    return redirect("ops:purge")


@staff_only
@require_POST
def exemption_delete(request: HttpRequest, pk: int) -> HttpResponse:
    services.exemption_remove(operator=request.user, exemption=get_object_or_404(Exemption, pk=pk))
    messages.success(request, _("Exemption removed."))
    return redirect("ops:purge")
