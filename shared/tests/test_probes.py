"""/livez is the process alone (a broker or database outage must not restart pods); /readyz and /healthz
report the broker and the database."""

from __future__ import annotations

import contextlib

from kredit_invoicing.app import create_app
from kredit_invoicing.settings import InvoicingSettings
from kredit_shared.testing import eventually, serve, tansu_broker


async def test_with_the_broker_gone_livez_stays_200_and_readyz_names_the_broker(tmp_path):
    with contextlib.ExitStack() as broker:
        bootstrap = broker.enter_context(tansu_broker())
        settings = InvoicingSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
            kafka_bootstrap_servers=bootstrap,
            kafka_session_timeout_ms=1000,
            kafka_heartbeat_interval_ms=200,
        )
        async with serve(create_app(settings)) as client:
            assert (await client.get("/livez")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            broker.close()  # the broker process stops; the service keeps running

            async def not_ready():
                response = await client.get("/readyz")
                return response if response.status_code == 503 else None

            response = await eventually(not_ready, timeout=30, interval=0.5)
            assert response.json()["checks"]["broker"] == "unreachable"
            assert response.json()["checks"]["database"] == "ok"
            assert (await client.get("/livez")).status_code == 200
