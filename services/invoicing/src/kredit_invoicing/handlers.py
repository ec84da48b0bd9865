"""Invoicing's use case: post an issued invoice or credit note, in one transaction with its messages."""

from __future__ import annotations

from kredit_invoicing.domain import InvoiceRejected, ensure_same_invoice, post_invoice
from kredit_invoicing.tables import InvoiceRow, invoice_rows
from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import CustomerInvoiceIssued
from kredit_shared.service import Rejected, Transaction


async def issue_invoice(tx: Transaction, message: CustomerInvoiceIssued, setup: CompanySetup) -> None:
    """Post the invoice and emit its customer transaction and ledger voucher.

    The ERP may send an invoice again under a new message_id: the same content is a no-op,
    different content is rejected (a posted invoice is corrected with a credit note)."""
    posted_before = await tx.session.get(InvoiceRow, message.invoice_id)
    try:
        if posted_before is not None:
            ensure_same_invoice(posted_before.fingerprint, message)
            return
        posted = post_invoice(message, setup)
    except InvoiceRejected as e:
        raise Rejected(e.reason) from None
    invoice, *details = invoice_rows(message, posted)
    tx.session.add(invoice)
    await tx.session.flush()  # the details' foreign keys need the invoice row inserted first
    tx.session.add_all(details)
    for output in posted.messages:
        tx.emit(output)
