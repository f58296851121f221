"""Test-wide configuration: the suite runs on PostgreSQL when DATABASE_URL names one."""
