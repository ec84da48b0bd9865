"""The contract's bounds: what a message or an HTTP body may hold, shared by Kafka and HTTP."""

import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kredit_shared.contracts import (
    CustomerInvoiceIssued,
    CustomerPaymentReceived,
    GeneralJournalRequested,
    VoucherPosted,
    journal_event_adapter,
)
from kredit_shared.contracts.messages import CashDiscountTier, derived_message_id, new_message_id

PAYMENT = {
    "payment_id": "ARP-10020",
    "customer_account": "4027",
    "payment_date": "2015-07-01",
    "amount": "297.00",
    "currency": "USD",
    "settle": [{"invoice_id": "10020", "amount_to_settle": "297.00", "use_cash_discount": "Normal"}],
}
INVOICE = {
    "invoice_id": "10020",
    "customer_account": "4027",
    "customer_name": "Fabrikam customer 4027",
    "invoice_date": "2015-06-25",
    "currency": "USD",
    "payment_terms": "Net30",
    "cash_discount_code": "1%14D",
    "lines": [{"description": "Goods", "amount": "1000.00", "revenue_account": "401100"}],
}


def as_json(fields: dict, **extra) -> bytes:
    return json.dumps({"message_id": str(uuid.uuid4())} | fields | extra).encode()


def test_a_message_read_from_json_must_carry_its_message_id():
    # A made-up id would make a redelivery of the same message a new message.
    with pytest.raises(ValidationError, match="message_id is required"):
        CustomerPaymentReceived.model_validate_json(json.dumps(PAYMENT))
    with pytest.raises(ValidationError, match="message_id is required"):
        journal_event_adapter.validate_json(
            json.dumps({"event_type": "JournalCreated", "journal_name": "WriteOff", "batch_number": "WO-0001"})
        )


def test_code_constructing_a_message_still_gets_a_fresh_message_id():
    first, second = CustomerPaymentReceived(**PAYMENT), CustomerPaymentReceived.model_validate(PAYMENT)
    assert uuid.UUID(first.message_id) != uuid.UUID(second.message_id)


def test_a_new_message_id_is_a_random_version_4_uuid_in_its_canonical_form():
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for message_id in ids:
        parsed = uuid.UUID(message_id)
        assert str(parsed) == message_id  # lower case, dashes: what consumers parse natively
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    # every digit but the version's and the variant's two bits is random: each position takes many values
    assert all(len({m[n] for m in ids}) >= 4 for n in range(36) if n not in (8, 13, 14, 18, 23))


@given(
    st.text(), st.sampled_from([uuid.NAMESPACE_URL, uuid.NAMESPACE_DNS, uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)])
)
def test_a_derived_message_id_is_uuid5_of_its_name(name, namespace):
    try:
        expected = str(uuid.uuid5(namespace, name))
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            derived_message_id(namespace, name)
        return
    assert derived_message_id(namespace, name) == expected


def test_the_documented_examples_stay_valid():
    assert CustomerInvoiceIssued.model_validate_json(as_json(INVOICE)).lines[0].amount == Decimal("1000.00")
    assert CustomerPaymentReceived.model_validate_json(as_json(PAYMENT)).amount == Decimal("297.00")
    assert CustomerPaymentReceived.model_validate_json(as_json(PAYMENT, payment_id="FTI-10020:1.a_b")).payment_id


@pytest.mark.parametrize("account", ["40/27", "a b", " 4027", "-4027", ".", "..", "4027\u0000", "ä", "x" * 65, ""])
def test_customer_accounts_are_safe_url_path_segments(account):
    # Accepted from Kafka, a customer with "/" in its account could never be read over HTTP.
    with pytest.raises(ValidationError, match="customer_account"):
        CustomerPaymentReceived.model_validate_json(as_json(PAYMENT, customer_account=account))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer_name", "Fabrikam\u0000"),
        ("customer_name", "x" * 201),
        ("payment_terms", "Net\u000030"),
        ("cash_discount_code", "x" * 65),
    ],
)
def test_strings_are_bounded_and_free_of_control_characters(field, value):
    # PostgreSQL refuses \u0000 in text; unbounded strings let one message fill a database.
    with pytest.raises(ValidationError, match=field):
        CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, **{field: value}))


def test_free_text_keeps_line_breaks_and_tabs_but_not_nul():
    line = INVOICE["lines"][0]
    ok = CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[line | {"description": "a\n\tb\r\n"}]))
    assert ok.lines[0].description == "a\n\tb\r\n"
    with pytest.raises(ValidationError, match="description"):
        CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[line | {"description": "a\u0000"}]))
    with pytest.raises(ValidationError, match="description"):
        CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[line | {"description": "x" * 1001}]))


def test_lists_hold_at_most_1000_entries():
    line = {"account": "110110", "debit": "1.00"}
    voucher = {"voucher": "V1", "posting_date": "2015-07-01", "currency": "USD"}
    assert len(VoucherPosted.model_validate_json(as_json(voucher, lines=[line] * 1000)).lines) == 1000
    with pytest.raises(ValidationError, match="at most 1000"):
        VoucherPosted.model_validate_json(as_json(voucher, lines=[line] * 1001))
    mark = PAYMENT["settle"][0]
    with pytest.raises(ValidationError, match="at most 1000"):
        CustomerPaymentReceived.model_validate_json(as_json(PAYMENT, settle=[mark] * 1001))
    journal_line = {
        "account_type": "Ledger",
        "account": "618900",
        "debit": "1.00",
        "currency": "USD",
        "transaction_date": "2015-07-01",
        "settles": [{"voucher": "FTI-1", "amount": "1.00"}] * 1001,
    }
    with pytest.raises(ValidationError, match="at most 1000"):
        GeneralJournalRequested.model_validate_json(
            as_json({"request_id": "r1", "journal_name": "WriteOff", "lines": [journal_line]})
        )


def test_an_invoice_total_has_the_bound_of_an_amount():
    # 1,000 lines of the largest amount would overflow NUMERIC(18,2) and int64 cents when stored.
    line = {"amount": "999999999999999.99"}
    assert CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[line])).lines[0].amount
    with pytest.raises(ValidationError, match="net amount .* exceeds the largest amount"):
        CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[line, line]))
    taxed = {"amount": "600000000000000.00", "sales_tax_amount": "600000000000000.00"}
    with pytest.raises(ValidationError, match="total .* exceeds the largest amount"):
        CustomerInvoiceIssued.model_validate_json(as_json(INVOICE, lines=[taxed]))


@pytest.mark.parametrize(
    "percent", [" 1.00", "1e1", "1_0", "NaN", "Infinity", "100.01", "-1", "1.1234567", 1.5, 10**30, "\uff11"]
)
def test_percents_are_strict_decimal_strings_from_0_to_100(percent):
    with pytest.raises(ValidationError, match="percent"):
        CashDiscountTier.model_validate({"percent": percent, "date": "2015-07-09"})


@pytest.mark.parametrize(
    ("percent", "parsed"), [("1.00", "1.00"), ("100", "100"), ("1.125", "1.125"), (2, "2"), (Decimal("2.5"), "2.5")]
)
def test_valid_percents_are_accepted(percent, parsed):
    assert CashDiscountTier.model_validate({"percent": percent, "date": "2015-07-09"}).percent == Decimal(parsed)


def test_the_json_schemas_show_the_bounds():
    schema = CustomerPaymentReceived.model_json_schema()
    account = schema["properties"]["customer_account"]
    assert (account["maxLength"], account["pattern"]) == (64, r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    assert schema["properties"]["settle"]["anyOf"][0]["maxItems"] == 1000
    assert "message_id" in schema["properties"]
