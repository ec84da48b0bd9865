"""Invoicing's use case: post issued invoices and credit notes, in one transaction with their messages."""

from __future__ import annotations

from kredit_invoicing import tables
from kredit_invoicing.domain import InvoiceAwaitsRate, InvoiceRejected, ensure_same_invoice, post_invoice
from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued
from kredit_shared.exchange_rates import keep_until_rate, load_rates
from kredit_shared.service import UnitOfWork


async def issue_invoices(uow: UnitOfWork, messages: list[CustomerInvoiceIssued], setup: CompanySetup) -> None:
    """Post a fetch of invoices at once and emit each one's customer transaction and ledger voucher.

    The ERP may send an invoice again under a new message_id: the same content is a no-op,
    different content goes to the dead-letter topic (a posted invoice is corrected with a credit note),
    as does an invoice that cannot be posted; the others post. One refused only for want of an exchange rate
    is also kept, and booked when its rate arrives (exchange_rates.record_rates)."""
    fingerprints = await tables.posted_fingerprints(uow.session, (m.invoice_id for m in messages))
    rates = await load_rates(uow.session, setup)  # for invoices in a foreign currency that state no rate
    posted = []
    for message in messages:
        try:
            if (fingerprint := fingerprints.get(message.invoice_id)) is not None:
                ensure_same_invoice(fingerprint, message)
                continue
            invoice = post_invoice(message, setup, rates)
        except InvoiceAwaitsRate as e:
            await keep_until_rate(uow, ERP_CUSTOMER_INVOICES, message, e.currency, e.on, e.reason)
            continue
        except InvoiceRejected as e:
            uow.reject(ERP_CUSTOMER_INVOICES, message, e.reason)
            continue
        fingerprints[message.invoice_id] = invoice.fingerprint  # a later copy in this batch is a no-op
        posted.append((message, invoice))
    await tables.add_invoices(uow.session, posted)
    for _, invoice in posted:
        for output in invoice.messages:
            uow.emit(output)
