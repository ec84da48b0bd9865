"""contracts.parsing: a record in the canonical form, parsed natively, is exactly what the full validation makes of it;
any other record is validated in full, so it keeps its values and its error messages."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from kredit_shared.contracts import CustomerPaymentReceived
from kredit_shared.contracts.catalog import TOPICS
from kredit_shared.contracts.examples import EXAMPLES
from kredit_shared.contracts.parsing import canonical_validator, json_parser, parsed_json

# Every example message, as our producers write it, with the topic that carries it.
RECORDS = [
    pytest.param(topic, example.model_dump_json().encode(), id=type(example).__name__)
    for example in EXAMPLES.values()
    for topic, contract in TOPICS.items()
    if type(example) in contract.keys
]


def _outcome(parse: Any, raw: bytes) -> Any:
    try:
        return parse(raw)
    except Exception as e:
        return (type(e).__name__, str(e))


def _assert_same(got: Any, expected: Any) -> None:
    """The same value, down to the type, the fields given, and the JSON it writes."""
    assert type(got) is type(expected)
    if isinstance(expected, BaseModel):
        assert got == expected
        assert got.model_fields_set == expected.model_fields_set
        assert got.model_dump_json() == expected.model_dump_json()
        assert got.model_dump_json(exclude_unset=True) == expected.model_dump_json(exclude_unset=True)
    else:  # an error: the same error, word for word
        assert got == expected


# A cancel is the second member of gl.general-journals' union: only the first is tried natively (parsing._canonical).
LATER_UNION_MEMBERS = {"GeneralJournalCancelRequested"}


@pytest.mark.parametrize(("topic", "raw"), RECORDS)
def test_a_record_in_the_canonical_form_is_taken_natively_as_the_full_validation_takes_it(topic: str, raw: bytes):
    payload = TOPICS[topic].payload
    expected = TypeAdapter(payload).validate_json(raw)
    _assert_same(json_parser(payload)(raw), expected)
    assert parsed_json(expected) == raw  # the examples were written by model_dump_json
    canonical = canonical_validator(TypeAdapter(payload).core_schema)
    if type(expected).__name__ in LATER_UNION_MEMBERS:
        with pytest.raises(ValueError):
            canonical.validate_json(raw)
    else:
        _assert_same(canonical.validate_json(raw), expected)


def _replace(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    changed = json.loads(json.dumps(document))
    place = changed
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
    return changed


def _leaves(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(document, dict):
        return [p for key, value in document.items() for p in _leaves(value, (*path, key))]
    if isinstance(document, list):
        return [p for n, value in enumerate(document) for p in _leaves(value, (*path, n))]
    return [path]


# Forms of the contract's values outside the canonical one, valid and not, and a few canonical ones.
ODD_VALUES = [
    *("1", "1.0", "1.000", "1.005", "1.230", "01.00", "-0.00", "+1.00", "1e2", "1E+2", " 1.00", "1.00 ", "１.00"),
    *("999999999999999.99", "1000000000000000.00", "0.001", "-12.345", "NaN", "Infinity", "100", "100.000001", "101"),
    *(1, 100, -5, 1.5, 2.0, 10**20, True, None, "", [], {}),
    *("2015-07-01", "2015-7-1", "20150701", "2015-02-29", "2016-02-29", "0000-01-01", "2015-07-01T00:00:00"),
    *("9999-12-31", "0001-01-01", "٢٠١٥-٠٧-٠١"),
    *("USD", "usd", "JPY", "KWD", "EUR", "XXX", "US"),
    "6B726564-6974-4578-616D-706C65000000",
    "{6b726564-6974-4578-616d-706c65000000}",
    "urn:uuid:6b726564-6974-4578-616d-706c65000000",
    "6b72656469744578616d706c65000000",
    "6b726564-6974-4578-616d-706c65000001",
]


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_record_parses_as_the_full_validation_parses_it(data: st.DataObject):
    """One value of an example message replaced (an amount by an integer, a KWD amount, a currency by JPY, an
    upper-case id, ...): the parser's value, or its error word for word, is the full validation's; and whatever the
    canonical form takes, it takes as the full validation does."""
    topic, raw = data.draw(st.sampled_from([p.values for p in RECORDS]))
    document = json.loads(raw)
    path = data.draw(st.sampled_from(_leaves(document)))
    changed = json.dumps(_replace(document, path, data.draw(st.sampled_from(ODD_VALUES)))).encode()
    payload = TOPICS[topic].payload
    expected = _outcome(TypeAdapter(payload).validate_json, changed)
    _assert_same(_outcome(json_parser(payload), changed), expected)
    if isinstance(expected, BaseModel):  # what the inbox fingerprints: the JSON model_dump_json writes, to the byte
        assert parsed_json(expected) == expected.model_dump_json().encode()
        assert (
            parsed_json(expected, exclude={"message_id"}) == expected.model_dump_json(exclude={"message_id"}).encode()
        )
    canonical = _outcome(canonical_validator(TypeAdapter(payload).core_schema).validate_json, changed)
    if not isinstance(canonical, tuple):
        _assert_same(canonical, expected)


@pytest.mark.parametrize(("topic", "raw"), RECORDS)
@pytest.mark.parametrize("odd", [100, "1.000", "6B726564-6974-4578-616D-706C65000000", "2015-7-1"])
def test_other_forms_are_left_to_the_full_validation(topic: str, raw: bytes, odd: Any):
    """An integer amount, three decimals, an upper-case id, a short date: valid where the full validation takes
    them, but not the canonical form, in the message and in the lists it holds (this fails if pydantic-core reused
    a model's own full validator for the canonical copy)."""
    canonical = canonical_validator(TypeAdapter(TOPICS[topic].payload).core_schema)
    document = json.loads(raw)
    for path in _leaves(document):
        value = document
        for step in path:
            value = value[step]
        if _same_kind(path[-1], value, odd):
            with pytest.raises(ValueError):
                canonical.validate_json(json.dumps(_replace(document, path, odd)))


def _same_kind(name: Any, value: Any, odd: Any) -> bool:
    """Whether `odd` is another form of the kind of value `value` is (an amount, an id, a date). Rates and percents
    look like amounts but have other forms (three decimals are canonical for them; rates are always checked in
    full)."""
    if not isinstance(value, str):
        return False
    if isinstance(odd, int) or odd == "1.000":
        return (
            name not in ("rate", "exchange_rate", "percent")
            and value.lstrip("-").replace(".", "").isdigit()
            and value.count(".") == 1
            and len(value.split(".")[1]) == 2
        )
    if len(odd) == 36:
        return name == "message_id"  # other ids (a request_id) may be any identifier
    return len(value) == 10 and value[4] == "-" and value[7] == "-"


def test_a_kwd_amount_with_three_decimals_keeps_them_and_a_jpy_amount_with_cents_is_refused():
    payment = json.loads(EXAMPLES[CustomerPaymentReceived].model_dump_json())
    parse = json_parser(TOPICS["erp.customer-payments"].payload)
    kwd = parse(json.dumps(payment | {"currency": "KWD", "amount": "297.125", "settle": None}).encode())
    assert kwd.amount == Decimal("297.125") and str(kwd.amount) == "297.125"
    with pytest.raises(ValueError, match="the currency has no decimals"):
        parse(json.dumps(payment | {"currency": "JPY", "amount": "297.50", "settle": None}).encode())
