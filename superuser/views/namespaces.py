"""Per-namespace replication: extra target locations of each namespace, searchable."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from registry.models import Namespace
from replication.models import StorageLocation

from ..access import superuser_required
from ..forms import NamespaceTargetsForm
from ..services import namespace_targets_update

PAGE_SIZE = 25


def _target_choices() -> list[str]:
    return list(
        StorageLocation.objects.exclude(kind="local")
        .order_by("rank", "location_id")
        .values_list("location_id", flat=True)
    )


@superuser_required
def namespaces(request: HttpRequest) -> HttpResponse:
    """List namespaces (searched by name, paginated) with their extra target locations."""
    query = request.GET.get("q", "").strip()
    found = Namespace.objects.order_by("name").prefetch_related("replication_targets__location")
    if query:
        found = found.filter(name__icontains=query)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [
        (
            namespace,
            sorted(target.location.location_id for target in namespace.replication_targets.all()),
        )
        for namespace in page.object_list
    ]
    context = {
        "tab": "namespaces",
        "query": query,
        "page": page,
        "rows": rows,
        "locations": _target_choices(),
        "here": request.get_full_path(),
    }
    return render(request, "superuser/namespaces.html", context)


@superuser_required
@require_POST
def namespace_targets(request: HttpRequest, pk: int) -> HttpResponse:
    """Replace the extra target locations of one namespace."""
    namespace = get_object_or_404(Namespace, pk=pk)
    form = NamespaceTargetsForm(request.POST, location_ids=_target_choices())
    back = request.POST.get("next") or reverse("superuser:namespaces")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("superuser:namespaces")
    if not form.is_valid():
        messages.error(request, f"{namespace.name}: choose among the configured locations.")
        return redirect(back)
    try:
        targets = namespace_targets_update(
            namespace=namespace, location_ids=form.cleaned_data["locations"], user=request.user
        )
    except ValidationError as exc:
        messages.error(request, f"{namespace.name}: {' '.join(exc.messages)}")
        return redirect(back)
    extra = ", ".join(targets) or "the default locations only"
    messages.success(request, f"{namespace.name} now replicates to: {extra}.")
    return redirect(back)
