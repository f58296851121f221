"""Storage engines: one contract (``base.StorageEngine``), one module per backend, no models.

This package imports no other app of the project.
"""
