"""The stored voucher fingerprint: domain.voucher_fingerprint writes the canonical JSON out by hand, so it is
checked against its original definition (pydantic's JSON form through json.dumps) over generated vouchers of
every shape, and pinned to fingerprints stored by earlier versions."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kredit_ledger_posting.domain import voucher_fingerprint
from kredit_shared.contracts import VoucherLine, VoucherPosted, content_fingerprint
from kredit_shared.currencies import minor_units
from kredit_shared.wire_strategies import CURRENCIES, IDS, NAME_CHARS, TEXT_CHARS, amounts


def original_fingerprint(voucher: VoucherPosted) -> str:
    """voucher_fingerprint as first written, which the stored fingerprints were made with: the reference."""
    content = voucher.model_dump(mode="json", exclude={"message_id"})
    content["lines"] = sorted(
        content["lines"], key=lambda line: json.dumps(line, sort_keys=True, separators=(",", ":"))
    )
    return content_fingerprint(content)


def test_the_fingerprint_covers_every_field_of_the_contract():
    # A field added to VoucherPosted or VoucherLine would be missed by voucher_fingerprint: decide first
    # whether it changes what is posted, and keep the fingerprints of vouchers posted before it.
    assert set(VoucherPosted.model_fields) == {
        "message_id",
        "voucher",
        "posting_date",
        "currency",
        "source",
        "description",
        "lines",
    }
    assert set(VoucherLine.model_fields) == {
        "account",
        "debit",
        "credit",
        "text",
        "customer_account",
        "transaction_currency",
        "transaction_currency_amount",
    }


def test_fingerprints_stored_by_earlier_versions_still_match():
    invoice = VoucherPosted.model_validate(
        {
            "voucher": "FTI-INV-0",
            "posting_date": "2025-01-15",
            "currency": "USD",
            "source": "invoicing",
            "description": "Invoice INV-0, customer C0",
            "lines": [
                {"account": "130100", "debit": "100.00", "text": "Invoice INV-0", "customer_account": "C0"},
                {"account": "401100", "credit": "100", "text": "Goods", "customer_account": None},
            ],
        }
    )
    foreign = VoucherPosted.model_validate(
        {
            "voucher": "FTI-E1",
            "posting_date": "2015-06-25",
            "currency": "USD",
            "source": "invoicing",
            "description": 'Rechnung "Ä" \\ 1\n',
            "lines": [
                {
                    "account": "401100",
                    "credit": "1100.00",
                    "transaction_currency": "KWD",
                    "transaction_currency_amount": "-1000.125",
                },
                {
                    "account": "130100",
                    "debit": 1100,
                    "transaction_currency": "KWD",
                    "transaction_currency_amount": 1000,
                },
            ],
        }
    )
    assert voucher_fingerprint(invoice) == "7e1ede80b54beb216ee48fbd54e22831effef63f308d1461c10eb3e9b61a55a5"
    assert voucher_fingerprint(foreign) == "b44d10b82fc1fab5f45f5a65f7079b902b2cc634859377056323b1597b9d5f73"


# --- generated vouchers ----------------------------------------------------------------------------

# By the currency's decimals; a voucher built in Python may hold Decimals.
_AMOUNTS = {decimals: amounts(decimals, digits=15, python_decimals=True) for decimals in range(4)}


@st.composite
def _lines(draw: st.DrawFn) -> dict[str, Any]:
    line: dict[str, Any] = {"account": draw(IDS)}
    for field in ("debit", "credit"):
        if draw(st.booleans()):
            line[field] = draw(_AMOUNTS[2])
    if draw(st.booleans()):
        line["text"] = draw(st.text(TEXT_CHARS, max_size=20))
    if draw(st.booleans()):
        line["customer_account"] = draw(st.one_of(st.none(), IDS))
    shape = draw(st.sampled_from(["accounting", "foreign", "currency only", "amount only", "both none"]))
    currency = draw(CURRENCIES)
    if shape in ("foreign", "currency only"):
        line["transaction_currency"] = currency
    if shape in ("foreign", "amount only"):
        line["transaction_currency_amount"] = draw(_AMOUNTS[minor_units(currency) if shape == "foreign" else 2])
    if shape == "both none":
        line |= {"transaction_currency": None, "transaction_currency_amount": None}
    if draw(st.booleans()):
        line["an_extension"] = draw(st.text(max_size=5))  # unknown fields are ignored
    return line


@st.composite
def vouchers(draw: st.DrawFn) -> VoucherPosted:
    lines = draw(st.lists(_lines(), min_size=1, max_size=6))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(lines)))  # the same line twice
    data: dict[str, Any] = {
        "message_id": "8f0e2c4e-4d0a-4d8e-9a51-0b8e4f7d1c11",
        "voucher": draw(IDS),
        "posting_date": draw(st.dates(min_value=date(1000, 1, 1))),
        "currency": draw(CURRENCIES),
        "lines": lines,
    }
    if draw(st.booleans()):
        data["source"] = draw(st.text(NAME_CHARS, max_size=20))
    if draw(st.booleans()):
        data["description"] = draw(st.text(TEXT_CHARS, max_size=40))
    try:
        if draw(st.booleans()):  # as a consumer reads it
            return VoucherPosted.model_validate_json(json.dumps(data, default=str))
        return VoucherPosted.model_validate(data | {"posting_date": draw(st.dates())})  # as Python builds it
    except ValidationError:  # e.g. a JPY amount with decimals: not a voucher anyone can send
        reject()


@settings(max_examples=500, deadline=None)
@given(vouchers())
def test_the_fingerprint_is_the_original_one_for_every_voucher(voucher):
    assert voucher_fingerprint(voucher) == original_fingerprint(voucher)


@given(vouchers(), st.randoms())
def test_reordered_lines_and_a_new_message_id_keep_the_fingerprint(voucher, random):
    lines = list(voucher.lines)
    random.shuffle(lines)
    again = voucher.model_copy(update={"lines": lines, "message_id": "1b4e28ba-2fa1-4d2e-883f-0016d3cca427"})
    assert voucher_fingerprint(again) == voucher_fingerprint(voucher)
