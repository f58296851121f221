"""Process-level endpoints that belong to no app."""

from django.db import connection
from django.http import HttpRequest, JsonResponse


def health_instance(request: HttpRequest) -> JsonResponse:
    """Answer whether this instance reaches its database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database_ok = True
    except Exception:  # noqa: BLE001 - any database failure means unhealthy
        database_ok = False
    status = 200 if database_ok else 503
    return JsonResponse({"status": "ok" if database_ok else "fail", "database": database_ok}, status=status)
