"""Transport security settings: the broker credentials reach every Kafka client the runtime makes
(FastStream's consumer, the outbox producer, the admin client) in the same form; DATABASE_SSL_MODE
reaches the PostgreSQL driver."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from kredit_shared.service import kafka_options, kafka_security
from kredit_shared.settings import ServiceSettings


def settings(**kafka) -> ServiceSettings:
    return ServiceSettings(service_name="x", http_port=1, database_url="sqlite://", **kafka)


def test_plaintext_by_default_for_the_local_broker_on_loopback():
    assert kafka_security(settings()) is None
    assert kafka_options(settings()) == {"bootstrap_servers": "127.0.0.1:9092"}


def test_sasl_scram_credentials_go_to_aiokafka_and_the_password_stays_secret():
    configured = settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="settlement", kafka_sasl_password="s3cret"
    )
    assert "s3cret" not in repr(configured)
    options = kafka_options(configured)
    assert {k: options[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username")} == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "settlement",
    }
    assert options["sasl_plain_password"] == "s3cret"


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert]
        + ["-days", "1", "-subj", "/CN=kredit-test"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_sasl_ssl_and_mtls_build_a_tls_context_from_the_files(certificate):
    cert, key = certificate
    sasl_ssl = kafka_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="ledger-posting",
            kafka_sasl_password="pw",
            kafka_ssl_cafile=cert,
        )
    )
    assert sasl_ssl["security_protocol"] == "SASL_SSL" and isinstance(sasl_ssl["ssl_context"], ssl.SSLContext)
    assert sasl_ssl["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    mtls = kafka_options(
        settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    )
    assert mtls["security_protocol"] == "SSL" and isinstance(mtls["ssl_context"], ssl.SSLContext)


def test_incomplete_credentials_are_refused_at_start_up_naming_what_is_missing():
    with pytest.raises(ValidationError, match="needs KAFKA_SASL_USERNAME and _PASSWORD"):
        settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="invoicing")
    with pytest.raises(ValidationError, match="go together"):
        settings(kafka_security_protocol="SSL", kafka_ssl_certfile="/x.pem")


async def test_database_ssl_mode_require_refuses_a_server_without_tls(postgres_admin_url):
    import asyncpg

    from kredit_shared.database import create_engine, ping

    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server reachable")
    probe = await asyncpg.connect(postgres_admin_url)
    try:
        if (await probe.fetchval("SHOW ssl")) == "on":
            pytest.skip("this PostgreSQL server offers TLS: nothing to refuse")
    finally:
        await probe.close()
    plain, required = create_engine(postgres_admin_url), create_engine(postgres_admin_url, ssl_mode="require")
    try:
        await ping(plain)  # "prefer" (the default) falls back to plaintext
        with pytest.raises(Exception, match="(?i)ssl"):
            await ping(required)
    finally:
        await plain.dispose()
        await required.dispose()
