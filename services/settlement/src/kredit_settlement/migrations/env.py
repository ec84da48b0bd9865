"""Alembic's entry point for the settlement schema history (see kredit_shared.migrations)."""

from kredit_shared.migrations import run_env

run_env()
