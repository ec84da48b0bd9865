"""The invoicing service's settings: the shared ones with this service's defaults."""

from __future__ import annotations

from kredit_shared.settings import ServiceSettings


class InvoicingSettings(ServiceSettings):
    service_name: str = "invoicing"
    http_port: int = 8081
    database_url: str = "sqlite+aiosqlite:///data/invoicing.db"
