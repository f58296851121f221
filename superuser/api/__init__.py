"""The /api/v1/superuser/ JSON API: the panel's configuration and status for automation."""
