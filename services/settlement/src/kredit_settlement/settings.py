"""The settlement service's settings (environment variables and `.env`)."""

from __future__ import annotations

from kredit_shared.settings import ServiceSettings


class SettlementSettings(ServiceSettings):
    """Built in `create_app()`, never at import time."""

    service_name: str = "settlement"
    http_port: int = 8082
    database_url: str = "sqlite+aiosqlite:///data/settlement.db"
