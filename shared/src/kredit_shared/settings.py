"""Settings every service shares (environment variables and `.env`), extended by each service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Built in each service's `create_app()`, never at import time."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    service_name: str
    http_host: str = "127.0.0.1"
    http_port: int
    database_url: str
    # PostgreSQL over TLS: "require" encrypts, "verify-full" also checks the server's certificate
    # against DATABASE_SSL_ROOT_CERT and its host name. Ignored for SQLite.
    database_ssl_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    database_ssl_root_cert: Path | None = None
    # Larger request bodies are answered 413 before they are read (the largest valid one is ~200 kB).
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # The broker is a trust boundary (docs/security.md): production authenticates each service as its
    # own principal with SASL/SCRAM over TLS (or mTLS) and the broker's ACLs limit it to its topics.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # the broker's CA (SSL, SASL_SSL)
    kafka_ssl_certfile: Path | None = None  # mTLS: this service's certificate and key
    kafka_ssl_keyfile: Path | None = None
    # In production the topics (and their ACLs) are made by whoever runs the broker; a service then
    # needs no CREATE right and only checks that its topics exist.
    kafka_create_topics: bool = True
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
    # The local broker holds every fetch for the whole wait, so a longer wait adds latency at every hop (payments'
    # p99 at 200/s went from ~240 to ~650 ms at 50 ms, docs/operations.md): the wait is short, and a consumer whose
    # fetches find nothing waits longer, doubling up to the idle wait (kredit_shared.fetch_pacing), so an idle
    # stack costs 17 % of a core instead of 50 %. An idle wait not above the max wait turns pacing off.
    kafka_fetch_max_wait_ms: int = 20
    kafka_fetch_idle_wait_ms: int = Field(default=200, ge=0)

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
    # Exact origins only: "*" is refused, a wildcard would let any web page drive the API with a stolen token.
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not re.fullmatch(r"https?://[^/*\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin like https://ar.example.com (no path, no wildcard)")
        return origins

    # --- authentication (kredit_shared.auth) ---------------------------------------------------
    # Production: the issuer's JWKS (RS256/ES256/EdDSA keys), its `iss` and the `aud` the tokens name.
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None  # required with AUTH_JWKS_URL; the local key's tokens say "kredit-local"
    auth_audience: str = "kredit"
    auth_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256", "EdDSA"]
    auth_roles_claim: str = "roles"  # a dotted path for issuers that nest it, e.g. "realm_access.roles"
    # Local run and tests: an HS256 key that `make run` generates under the data folder (used only
    # when AUTH_JWKS_URL is not set); the workspace then also offers one-click local sign-in.
    auth_signing_key_file: Path | None = Path("data/auth/signing.key")
    auth_leeway_seconds: int = Field(default=30, ge=0)

    @field_validator("auth_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        return [a.strip() for a in value.split(",") if a.strip()] if isinstance(value, str) else value

    # Per client (token subject, else address) and per process: a token bucket of `burst` requests
    # refilled at `per_minute`; 0 per minute turns a limit off. Over it: 429 with Retry-After.
    rate_limit_writes_per_minute: int = Field(default=120, ge=0)
    rate_limit_writes_burst: int = Field(default=60, ge=1)
    rate_limit_expensive_reads_per_minute: int = Field(default=30, ge=0)
    rate_limit_expensive_reads_burst: int = Field(default=10, ge=1)

    # Crash points for failure tests only (e.g. "relay-before-publish,consumer-after-commit").
    failpoints: Annotated[frozenset[str], NoDecode] = frozenset()

    @field_validator("failpoints", mode="before")
    @classmethod
    def _split_failpoints(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(p.strip() for p in value.split(",") if p.strip())
        return value

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> ServiceSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL {self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and _PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (mTLS)")
        return self

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
