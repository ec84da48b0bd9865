"""Settings every service shares (environment variables and `.env`), extended by each service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Built in each service's `create_app()`, never at import time."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    service_name: str
    http_host: str = "127.0.0.1"
    http_port: int
    database_url: str
    # Larger request bodies are answered 413 before they are read (the largest valid one is ~200 kB).
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    company_setup_file: Path | None = None  # None = the packaged demo company

    # Names every topic `<topic_prefix><contract name>`; only test runs sharing a broker set it.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    consumer_group: str | None = None  # default: <topic_prefix>kredit-<service_name>

    # The local broker completes a JoinGroup after ~half the session timeout and holds every fetch
    # for the whole fetch wait (docs/platform-notes.md), so both are kept short. 6 s is Apache Kafka's
    # minimum session timeout; the local stack and the tests use 1 s (1 s joins and restarts).
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    kafka_fetch_max_wait_ms: int = 20

    outbox_relay_enabled: bool = True
    outbox_poll_interval_seconds: float = 0.5
    outbox_batch_size: int = Field(default=2000, ge=1)  # rows the relay publishes per round trip
    # Published outbox rows and inbox entries older than this are deleted by a job in every service
    # (0 keeps them). An inbox entry is what makes a redelivery a no-op: keep it longer than any
    # redelivery can take (a consumer group's committed offsets make that minutes, not days).
    retention_days: float = Field(default=7, ge=0)
    retention_interval_seconds: float = Field(default=600, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1)  # rows per delete, so no lock is held for long
    # An unexpected handler error is retried this many times before the message is dead-lettered.
    consumer_max_attempts: int = 5
    # /readyz fails once one message has been retried, or the relay has failed, for this long.
    stuck_after_seconds: float = 60.0
    # The most records one fetch hands the consumer (a batch handler commits them in one transaction).
    consumer_batch_size: int = Field(default=500, ge=1)

    # Logs: `json` (one object per line, for collectors) or `console` (readable; colours only on a terminal).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "console"
    # Traces are exported by OTLP/HTTP to this collector (e.g. http://otel-collector:4318); off when unset.
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # Browser origins allowed to call the HTTP API (CORS), e.g. "https://ar.example.com,http://localhost:5173".
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value

    # Crash points for failure tests only (e.g. "relay-before-publish,consumer-after-commit").
    failpoints: Annotated[frozenset[str], NoDecode] = frozenset()

    @field_validator("failpoints", mode="before")
    @classmethod
    def _split_failpoints(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(p.strip() for p in value.split(",") if p.strip())
        return value

    @property
    def group_id(self) -> str:
        return self.consumer_group or f"{self.topic_prefix}kredit-{self.service_name}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self.topic_prefix)


class LocalStackSettings(BaseSettings):
    """The local run's settings (`make run`, `make demo`): environment variables and `.env`, like the
    services' own. The services get their ports and the broker from these."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # An external broker; unset, `make run` starts the embedded one on KAFKA_PORT.
    kafka_bootstrap_servers: str | None = None
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    collections_port: int = Field(default=8080, ge=1, le=65535)
    invoicing_port: int = Field(default=8081, ge=1, le=65535)
    settlement_port: int = Field(default=8082, ge=1, le=65535)
    ledger_posting_port: int = Field(default=8083, ge=1, le=65535)
    data_dir: Path = Path("data")
    # Short, for the local broker's joins and restarts (docs/operations.md, "Consumer session timeout").
    kafka_session_timeout_ms: int = 1000
    kafka_heartbeat_interval_ms: int = 200

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    def port(self, service: str) -> int:
        return getattr(self, f"{service.replace('-', '_')}_port")
