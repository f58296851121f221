"""Replication status tab: counts, throughput, backfill progress, failures, instances."""

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from replication.models import StorageLocation
from replication.tasks import audit_location

from ..access import superuser_required
from ..forms import whole_number
from ..selectors import status_overview
from ..services import failed_placements_retry

#: Seconds between two refreshes of the status fragment.
REFRESH_SECONDS = 3


@superuser_required
def status(request: HttpRequest) -> HttpResponse:
    """Show the whole status page; its body refreshes itself from ``status_fragment``."""
    context = {"tab": "status", "overview": status_overview(), "refresh": REFRESH_SECONDS}
    return render(request, "superuser/status.html", context)


@superuser_required
def status_fragment(request: HttpRequest) -> HttpResponse:
    """Render only the status body, for the page's periodic refresh."""
    return render(request, "superuser/_status.html", {"overview": status_overview()})


@superuser_required
@require_POST
def retry(request: HttpRequest) -> HttpResponse:
    """Retry one failed placement, or every failed one (optionally of one location)."""
    if "placement" in request.POST:
        numbers = (whole_number(v) for v in request.POST.getlist("placement"))
        ids = [number for number in numbers if number is not None]
        count = failed_placements_retry(placement_ids=ids)
    else:
        count = failed_placements_retry(location_id=request.POST.get("location_id") or None)
    messages.success(request, f"{count} failed placement(s) sent back to the replication queue.")
    return redirect("superuser:status")


@superuser_required
@require_POST
def audit(request: HttpRequest) -> HttpResponse:
    """Start an audit of one location in the background."""
    location = StorageLocation.objects.filter(location_id=request.POST.get("location_id")).first()
    if location is None:
        messages.error(request, "No such storage location.")
    else:
        transaction.on_commit(lambda: audit_location.delay(location.pk))
        messages.success(request, f"Audit of {location.location_id} started.")
    return redirect("superuser:status")
