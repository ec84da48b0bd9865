"""The collections service's settings (environment variables and `.env`)."""

from __future__ import annotations

from kredit_shared.settings import ServiceSettings


class CollectionsSettings(ServiceSettings):
    service_name: str = "collections"
    http_port: int = 8080
    database_url: str = "sqlite+aiosqlite:///data/collections.db"
    # The workspace (ui.py) reviews and posts write-off journals through ledger-posting's HTTP API.
    ledger_posting_url: str = "http://127.0.0.1:8083"
