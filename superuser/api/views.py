"""Views of the superuser API: superusers only, by session (with CSRF) or HTTP Basic."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.models import Namespace
from replication.backfill import backfill_progress
from replication.config import storage_config_read, storage_config_save
from replication.models import BackfillRun, StorageLocation

from ..selectors import status_overview
from ..services import backfills_launch, failed_placements_retry, namespace_targets_update
from . import serializers as s
from .authentication import CountedBasicAuthentication


class IsSuperuser(BasePermission):
    """Allow active superusers only."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user is not None and user.is_authenticated and user.is_superuser)


class SuperuserAPIView(APIView):
    authentication_classes = [CountedBasicAuthentication, SessionAuthentication]
    permission_classes = [IsSuperuser]
    schema = AutoSchema()


def _backfill_data(run: BackfillRun) -> dict[str, Any]:
    progress = backfill_progress(run_id=run.pk)
    return {
        "id": run.pk,
        "location_id": run.location.location_id if run.location else None,
        "started_at": run.started_at,
        "started_by": run.started_by,
        "planned": progress.planned,
        "present": progress.present,
        "failed": progress.failed,
        "remaining": progress.remaining,
        "percent": round(progress.percent, 2),
        "planning": progress.planning,
        "done": progress.done,
    }


class StorageConfigView(SuperuserAPIView):
    """The whole storage configuration: replication on or off, and every location."""

    @extend_schema(responses=s.StorageConfigSerializer, summary="Read the storage configuration")
    def get(self, request: Request) -> Response:
        return Response(s.config_data(storage_config_read()))

    @extend_schema(
        request=s.StorageConfigSerializer,
        responses={200: s.SaveResultSerializer, 400: s.SaveErrorSerializer},
        parameters=[
            OpenApiParameter(
                "probe", bool, description="Probe every engine live before saving (default true)."
            )
        ],
        summary="Replace the storage configuration",
        description="Validates everything (engine options, IDs, replication rules, removals, a "
        "live write/read/delete probe of every engine) and saves all of it or nothing.",
    )
    def put(self, request: Request) -> Response:
        body = s.StorageConfigSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        config = body.to_config()
        probe = str(request.query_params.get("probe", "true")).lower() not in ("0", "false", "no")
        result = storage_config_save(
            config=config, actor=request.user.get_username(), user=request.user, probe=probe
        )
        if not result.saved:
            return Response(s.result_errors(result, config), status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {
                "saved": True,
                "config_version": result.version,
                "warnings": result.warnings,
                "new_default_locations": result.new_defaults,
                "config": s.config_data(storage_config_read()),
            }
        )


def _namespace_data(namespace: Namespace) -> dict[str, Any]:
    return {
        "name": namespace.name,
        "kind": namespace.kind,
        "locations": sorted(t.location.location_id for t in namespace.replication_targets.all()),
    }


class NamespaceListView(SuperuserAPIView):
    @extend_schema(
        responses=s.NamespacePageSerializer,
        parameters=[
            OpenApiParameter("q", str, description="Part of the namespace name."),
            OpenApiParameter("page", int, description="Page number (100 per page)."),
        ],
        summary="List namespaces with their extra target locations",
    )
    def get(self, request: Request) -> Response:
        found = Namespace.objects.order_by("name").prefetch_related("replication_targets__location")
        if query := request.query_params.get("q", "").strip():
            found = found.filter(name__icontains=query)
        paginator = Paginator(found, 100)
        page = paginator.get_page(request.query_params.get("page"))
        return Response(
            {
                "count": paginator.count,
                "page": page.number,
                "pages": paginator.num_pages,
                "results": [_namespace_data(namespace) for namespace in page.object_list],
            }
        )


class NamespaceTargetsView(SuperuserAPIView):
    @extend_schema(responses=s.NamespaceTargetsSerializer, summary="Read a namespace's targets")
    def get(self, request: Request, name: str) -> Response:
        return Response(_namespace_data(get_object_or_404(Namespace, name=name)))

    @extend_schema(
        request=s.NamespaceTargetsSerializer,
        responses=s.NamespaceTargetsSerializer,
        summary="Replace a namespace's extra target locations",
        description="Existing images of the namespace are then copied to new targets.",
    )
    def put(self, request: Request, name: str) -> Response:
        namespace = get_object_or_404(Namespace, name=name)
        body = s.NamespaceTargetsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wanted = set(body.validated_data["locations"])
        known = set(StorageLocation.objects.values_list("location_id", flat=True))
        if unknown := sorted(wanted - known):
            return Response(
                {"locations": [f"Unknown location(s): {', '.join(unknown)}."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            namespace_targets_update(namespace=namespace, location_ids=wanted, user=request.user)
        except ValidationError as exc:
            return Response({"locations": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
        return Response(_namespace_data(namespace))


class StatusView(SuperuserAPIView):
    @extend_schema(responses=s.StatusSerializer, summary="Replication status")
    def get(self, request: Request) -> Response:
        overview = status_overview()
        return Response(
            {
                "locations": [
                    {
                        **row.status.as_dict(),
                        "copied_bytes_5min": row.copied_bytes,
                        "throughput_bytes_per_second": row.throughput,
                    }
                    for row in overview.locations
                ],
                "failed_total": overview.failed_total,
                "failed": [
                    {
                        "id": placement.pk,
                        "digest": placement.blob.digest,
                        "size": placement.blob.size,
                        "location_id": placement.location.location_id,
                        "attempts": placement.attempts,
                        "last_error": placement.last_error,
                        "permanent": placement.error_permanent,
                        "updated_at": placement.updated_at,
                    }
                    for placement in overview.failed
                ],
                "backfills": [_backfill_data(row.run) for row in overview.backfills],
                "instances": [
                    {
                        "instance_id": row.beat.instance_id,
                        "host": row.beat.host,
                        "role": row.beat.role,
                        "preference": row.beat.preference,
                        "version": row.beat.version,
                        "seen_at": row.beat.seen_at,
                        "stale": row.stale,
                        "reachable": row.beat.reachable,
                    }
                    for row in overview.instances
                ],
            }
        )


class RetryView(SuperuserAPIView):
    @extend_schema(
        request=s.RetrySerializer,
        responses=s.RetryResultSerializer,
        summary="Retry failed placements",
    )
    def post(self, request: Request) -> Response:
        body = s.RetrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data.get("all"):
            count = failed_placements_retry(location_id=data.get("location_id") or None)
        else:
            count = failed_placements_retry(placement_ids=data["ids"])
        return Response({"retried": count})


class BackfillListView(SuperuserAPIView):
    @extend_schema(
        request=s.BackfillStartSerializer,
        responses={202: s.BackfillSerializer},
        summary="Start a backfill in the background",
    )
    def post(self, request: Request) -> Response:
        body = s.BackfillStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            (run,) = backfills_launch(
                location_ids=[body.validated_data.get("location_id") or None], user=request.user
            )
        except LookupError as exc:
            return Response({"location_id": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(_backfill_data(run), status=status.HTTP_202_ACCEPTED)


class BackfillDetailView(SuperuserAPIView):
    @extend_schema(responses=s.BackfillSerializer, summary="Progress of a backfill")
    def get(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(BackfillRun.objects.select_related("location"), pk=pk)
        return Response(_backfill_data(run))


class SchemaView(SpectacularAPIView):
    authentication_classes = [CountedBasicAuthentication, SessionAuthentication]
    permission_classes = [IsSuperuser]
    custom_settings = {
        "TITLE": "quay-geo superuser API",
        "DESCRIPTION": "Storage configuration, per-namespace replication and replication status.",
        "VERSION": "1",
    }
