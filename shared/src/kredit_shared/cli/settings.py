"""Where the `kredit` CLI finds the broker and the services: environment variables and `.env`,
with the same names and defaults as the local run (`make run`)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    kafka_bootstrap_servers: str | None = None  # default: the local broker on KAFKA_PORT
    kafka_port: int = 9092
    topic_prefix: str = ""  # as the services were started with
    collections_url: str | None = None  # default: http://127.0.0.1:<COLLECTIONS_PORT>
    collections_port: int = 8080
    # Sent as `Authorization: Bearer …` to the services' HTTP APIs; default: the local run's viewer token.
    kredit_token: str | None = None
    data_dir: Path = Path("data")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def collections(self) -> str:
        return (self.collections_url or f"http://127.0.0.1:{self.collections_port}").rstrip("/")

    def token(self) -> str | None:
        local = self.data_dir / "tokens" / "viewer.token"
        return self.kredit_token or (local.read_text().strip() if local.is_file() else None)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
