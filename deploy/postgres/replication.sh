#!/bin/sh
# Runs once, when the primary's data directory is created (/docker-entrypoint-initdb.d): the
# role and the slot region eu's streaming replica copies and follows the primary with.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot('replica_eu');
SQL
# "all" in pg_hba.conf does not cover replication connections: they need their own line.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
