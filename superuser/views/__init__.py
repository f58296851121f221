"""Views of the /superuser panel: thin adapters over replication's services."""
