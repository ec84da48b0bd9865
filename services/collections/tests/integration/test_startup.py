"""Start-up: the settings' defaults, and an invalid company setup stops the service with a message."""

from __future__ import annotations

import pytest

from kredit_collections.app import main
from kredit_collections.settings import CollectionsSettings
from kredit_shared.company_setup import DEMO_SETUP_FILE
from kredit_shared.testing import free_port


def test_the_defaults_are_those_of_the_local_run(monkeypatch):
    for name in ("SERVICE_NAME", "HTTP_PORT", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = CollectionsSettings(_env_file=None)
    assert (settings.service_name, settings.http_port, settings.database_url, settings.group_id) == (
        "collections",
        8080,
        "sqlite+aiosqlite:///data/collections.db",
        "kredit-collections",
    )


def test_an_invalid_setup_stops_the_service_naming_the_bad_field(monkeypatch, tmp_path):
    setup = tmp_path / "company.yaml"
    setup.write_text(DEMO_SETUP_FILE.read_text().replace("reason_code: BadDebt", "reason_code: Lost"))
    monkeypatch.setenv("COMPANY_SETUP_FILE", str(setup))
    monkeypatch.setenv("HTTP_PORT", str(free_port()))
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(
        SystemExit, match=r"company setup .*company.yaml: .*write_off.reason_code: unknown reason code 'Lost'"
    ):
        main()
