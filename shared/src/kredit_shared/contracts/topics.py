"""Topic names of the contract, in one place."""

ERP_CUSTOMER_INVOICES = "erp.customer-invoices"
ERP_CUSTOMER_PAYMENTS = "erp.customer-payments"
AR_CUSTOMER_TRANSACTIONS = "ar.customer-transactions"
AR_SETTLEMENTS = "ar.settlements"
GL_JOURNAL_LINES = "gl.journal-lines"
GL_GENERAL_JOURNALS = "gl.general-journals"
GL_JOURNAL_EVENTS = "gl.journal-events"
GL_EXCHANGE_RATES = "gl.exchange-rates"

ALL_TOPICS = (
    ERP_CUSTOMER_INVOICES,
    ERP_CUSTOMER_PAYMENTS,
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    GL_JOURNAL_LINES,
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    GL_EXCHANGE_RATES,
)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"
