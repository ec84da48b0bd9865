"""contracts.construct: the services' fast way to build a message without validation."""

from datetime import date
from decimal import Decimal

from kredit_shared.contracts import CashDiscountTier, CustomerTransactionPosted, construct


def test_construct_given_every_field_builds_what_model_construct_and_validation_build():
    """The services' fast path: the same value, the same JSON bytes, the same fields set; given fewer fields it
    is model_construct itself (defaults filled in)."""
    fields = {
        "message_id": "0b5c9f2e-8d4b-4a39-9a5e-3f1d2c4b5a69",
        "voucher": "FTI-1",
        "transaction_type": "Invoice",
        "customer_account": "C1",
        "customer_name": "Contoso",
        "transaction_date": date(2026, 1, 1),
        "invoice_id": "1",
        "amount": Decimal("100.00"),
        "currency": "USD",
        "due_date": date(2026, 1, 31),
        "cash_discounts": [
            construct(CashDiscountTier, percent=Decimal("1"), date=date(2026, 1, 15), amount=Decimal("1.00"))
        ],
        "cash_discount_account": None,
        "sales_tax_amount": Decimal("0.00"),
        "payment_id": None,
        "exchange_rate": None,
        "accounting_currency_amount": None,
    }
    fast = construct(CustomerTransactionPosted, **fields)
    slow = CustomerTransactionPosted.model_construct(**fields)
    validated = CustomerTransactionPosted.model_validate(fast.model_dump())
    assert fast == slow == validated
    assert fast.model_dump_json() == slow.model_dump_json() == validated.model_dump_json()
    assert fast.model_fields_set == set(CustomerTransactionPosted.model_fields)
    partial = construct(CustomerTransactionPosted, **{k: v for k, v in fields.items() if k != "payment_id"})
    assert partial.payment_id is None and "payment_id" not in partial.model_fields_set
