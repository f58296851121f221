"""Configuration tab, "Registry Storage" section: every location on one page, saved at once."""

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from replication.config import storage_config_read, storage_config_save
from replication.models import AuditEntry, StorageLocation

from ..access import superuser_required
from ..forms import (
    CARDS_MAX,
    LocationFormSet,
    StorageSettingsForm,
    cards_ordered,
    config_from_forms,
    errors_attach,
    initial_cards,
    kinds_offered,
    whole_number,
)
from ..services import backfills_launch

SYNC_OFFER = "superuser_sync_offer"
AUDIT_SHOWN = 10


def _form_kwargs() -> dict[str, Any]:
    rows = list(StorageLocation.objects.all())
    return {
        "kinds": kinds_offered({row.kind for row in rows}),
        "stored": {row.pk: (row.kind, frozenset(row.secrets)) for row in rows},
    }


@superuser_required
def config(request: HttpRequest) -> HttpResponse:
    """Show the storage configuration; on POST validate all of it and save it or show why not."""
    result = None
    if request.method == "POST":
        data = request.POST.copy()
        adding = "add_card" in data
        total = whole_number(data.get("form-TOTAL_FORMS") or 0)
        if adding and total is not None and total < CARDS_MAX:
            # Without JavaScript "Add storage engine" re-renders the page with one more card.
            data["form-TOTAL_FORMS"] = str(total + 1)
            data[f"form-{total}-kind"] = "s3"
            data[f"form-{total}-ORDER"] = str(total + 1)
        settings_form = StorageSettingsForm(data)
        formset = LocationFormSet(data, form_kwargs=_form_kwargs())
        if not adding and settings_form.is_valid() and formset.is_valid():
            storage, cards = config_from_forms(settings_form, formset)
            result = storage_config_save(
                config=storage, actor=request.user.get_username(), user=request.user
            )
            if result.saved:
                for warning in result.warnings:
                    messages.warning(request, warning)
                messages.success(
                    request, f"Storage configuration saved (version {result.version})."
                )
                if result.new_defaults:
                    request.session[SYNC_OFFER] = result.new_defaults
                return redirect("superuser:config")
            errors_attach(result, cards)
        else:
            formset.is_valid()
    else:
        stored = storage_config_read()
        settings_form = StorageSettingsForm(
            initial={
                "storage_replication_enabled": stored.replication_enabled,
                "config_version": stored.version,
            }
        )
        formset = LocationFormSet(initial=initial_cards(stored), form_kwargs=_form_kwargs())
    context = {
        "tab": "config",
        "settings_form": settings_form,
        "formset": formset,
        "cards": cards_ordered(formset),
        "result": result,
        "sync_offer": request.session.pop(SYNC_OFFER, []) if request.method == "GET" else [],
        "audit": AuditEntry.objects.all()[:AUDIT_SHOWN],
    }
    return render(request, "superuser/config.html", context)


@superuser_required
@require_POST
def sync(request: HttpRequest) -> HttpResponse:
    """Start a background backfill for each location named, then show its progress."""
    named: list[str | None] = [lid for lid in request.POST.getlist("location_id") if lid]
    location_ids = named or [None]
    try:
        runs = backfills_launch(location_ids=location_ids, user=request.user)
    except LookupError as exc:
        messages.error(request, str(exc))
        return redirect("superuser:config")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("superuser:config")
    messages.success(
        request,
        f"Started syncing existing images ({len(runs)} backfill run(s)); progress is shown below.",
    )
    return redirect("superuser:status")
