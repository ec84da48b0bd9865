"""kredit_shared.testing.handler_database: the in-memory unit of work the handler tests run on."""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import pytest
from sqlmodel import select

from kredit_shared.contracts import AR_SETTLEMENTS, ERP_CUSTOMER_INVOICES, ExchangeRateSet
from kredit_shared.exchange_rates import ExchangeRateRow, record_rates
from kredit_shared.service import Rejected
from kredit_shared.testing import handler_database

RATE = ExchangeRateSet(currency="EUR", from_date="2026-01-01", rate="1.10")


async def test_a_handler_commits_its_state_and_messages_together_and_a_failure_rolls_both_back():
    async with handler_database([], publishes=[RATE.topic]) as db:

        async def fails(uow):
            await record_rates(uow, [RATE], "USD")
            uow.emit(RATE)
            raise Rejected("no")

        with pytest.raises(Rejected):
            await db.handle(fails)
        assert (await db.all(select(ExchangeRateRow)), await db.emitted()) == ([], [])

        async def succeeds(uow):
            await record_rates(uow, [RATE], "USD")
            uow.emit(RATE)

        handled = await db.handle(succeeds)
        [emitted] = handled.emitted
        assert (emitted.topic, emitted.key, emitted.message_type, emitted.json()["rate"]) == (
            RATE.topic,
            "EUR",
            "ExchangeRateSet",
            "1.10",
        )
        assert len(await db.all(select(ExchangeRateRow))) == 1
        assert (await db.handle(succeeds)).emitted != [], "each handle reports only its own rows"
        assert len(await db.emitted()) == 2


async def test_emitting_to_a_topic_the_service_does_not_declare_fails_as_in_the_service():
    async with handler_database([], publishes=[AR_SETTLEMENTS]) as db:
        with pytest.raises(RuntimeError, match="does not declare"):
            await db.handle(lambda uow: record_and_emit(uow))


async def record_and_emit(uow) -> None:
    uow.emit(RATE)


async def test_deliver_skips_a_redelivery_and_releases_a_rejected_message_for_its_replay():
    async with handler_database([]) as db:

        async def reject_all(uow, messages):
            for message in messages:
                uow.reject(ERP_CUSTOMER_INVOICES, message, "not yet")

        rejected = await db.deliver(RATE.topic, [RATE], reject_all)
        assert rejected.rejected == ["not yet"] and rejected.emitted[0].reason == "not yet"
        assert (
            await db.deliver(RATE.topic, [RATE], partial(record_rates, accounting_currency="USD"))
        ).rejected == []  # the replay is processed
        assert (await db.deliver(RATE.topic, [RATE], reject_all)).emitted == []  # then a redelivery is skipped
        assert len(await db.all(select(ExchangeRateRow))) == 1


async def test_a_message_its_consumers_would_refuse_fails_the_test_naming_it():
    """Services build their messages without validation (model_construct): the harness parses every one it
    reads back as the topic's consumers do. A dead letter (`<topic>.dlq`) carries whatever came in: not parsed."""
    async with handler_database([]) as db:

        async def emits(uow):
            uow.emit(ExchangeRateSet.model_construct(currency="EUR", from_date=RATE.from_date, rate=Decimal("-1")))

        with pytest.raises(AssertionError, match="ExchangeRateSet on gl.exchange-rates is not valid contract JSON"):
            await db.handle(emits)

        async def dead_letters(uow):
            uow.dead_letter(RATE.topic, ExchangeRateSet.model_construct(currency="EUR", rate=Decimal("-1")), "bad")

        [letter] = (await db.handle(dead_letters)).emitted
        assert (letter.topic, letter.reason) == (f"{RATE.topic}.dlq", "bad")
