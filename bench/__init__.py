"""The benchmark of datasync-dagster against the raw floor of PostgreSQL itself.

Run it with `.venv/bin/python -m bench` (see bench/README.md).
"""
