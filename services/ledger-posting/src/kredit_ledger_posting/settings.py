"""Settings of the ledger-posting service."""

from kredit_shared.settings import ServiceSettings


class LedgerPostingSettings(ServiceSettings):
    service_name: str = "ledger-posting"
    http_port: int = 8083
    database_url: str = "sqlite+aiosqlite:///data/ledger-posting.db"
