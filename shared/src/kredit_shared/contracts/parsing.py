"""How consumers parse contract messages: the canonical form natively, everything else as the contract says.

The contract's types check their input in Python (money.parse_amount, the ISO dates, the message ids, ...): each
call is cheap, but a message makes ten or more of them, and parsing was most of what collections and ledger-posting
spent on a message. Nearly every record is in the canonical form our producers (and the documented examples)
write: amounts as strings with two decimals ("1234.56"), dates "2026-01-15", lower-case UUIDs, ISO currency codes.
`json_parser` first validates a record against a copy of the contract's schema in which those types accept only
that form, checked natively by pydantic-core; the values are exactly those the full validation gives for it (a
test compares them, shared/tests/test_parsing.py). Any record the copy does not take (an integer amount, a KWD
amount with three decimals, an upper-case UUID, and every invalid one) is validated again in full, so its values
and its error messages are what they always were.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import SchemaSerializer, SchemaValidator
from pydantic_core import core_schema as cs

from kredit_shared import money
from kredit_shared.contracts import messages


def _canonical_string(pattern: str) -> cs.CoreSchema:
    return cs.str_schema(pattern=pattern, strict=True)  # a JSON string, never a number


_CANONICAL_AMOUNT = cs.chain_schema([_canonical_string(r"^-?[0-9]{1,15}\.[0-9]{2}$"), cs.decimal_schema()])

# Each Python check of the contract's types, and the native schema of its canonical form. Every value such a schema
# takes, the check takes too and turns into the same value: an amount with exactly two decimals is what parse_amount
# rounds it to, and what parse_transaction_amount makes of it in a currency of two or three decimals (a currency with
# none, JPY, is checked by the message's own validator, which the copy keeps).
_CANONICAL_FORMS: dict[Callable[[Any], Any], cs.CoreSchema] = {
    money.parse_amount: _CANONICAL_AMOUNT,
    money.parse_transaction_amount: _CANONICAL_AMOUNT,
    money.parse_currency: cs.literal_schema(sorted(money.ISO_4217)),
    messages.parse_iso_date: cs.chain_schema([_canonical_string(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), cs.date_schema()]),
    messages.parse_message_id: _canonical_string(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    messages.parse_percent: cs.chain_schema(
        [_canonical_string(messages.PERCENT_PATTERN), cs.decimal_schema(le=Decimal(100))]
    ),
}


def json_parser(payload: Any) -> Callable[[bytes], Any]:
    """The function a consumer parses a record of `payload` (a message model, or a union such as JournalEvent) with:
    the canonical form natively, anything else by the full validation (see the module's doc)."""
    full = TypeAdapter(payload)
    canonical = canonical_validator(full.core_schema)
    for model in _models_in(full.core_schema):  # built now, at start-up, not while requests run in threads
        _parsed_serializer(model)

    def parse(raw: bytes) -> Any:
        try:
            return canonical.validate_json(raw)
        except Exception:  # not in the canonical form, or not valid at all: the full validation says which
            return full.validate_json(raw)

    return parse


def parsed_json(message: BaseModel, exclude: set[str] | None = None) -> bytes:
    """`message.model_dump_json(exclude=exclude)`, encoded, for a message that was validated (parsed, or built with
    validation), at half the cost. Validation leaves its amounts in money.tidy's form (two decimals, or a KWD amount's
    three), which Decimal's own str() writes as the contract's amount serializers do, so those Python serializers are
    left out (shared/tests/test_parsing.py compares the bytes). Not for a message built without validation
    (`construct`): its amounts may have another form."""
    return _parsed_serializer(type(message)).to_json(message, exclude=exclude)


@functools.cache
def _parsed_serializer(model: type[BaseModel]) -> SchemaSerializer:
    schema = _without_amount_serializers(model.__pydantic_core_schema__)
    with _built_anew(_models_in(schema)):
        return SchemaSerializer(schema)


_AMOUNT_SERIALIZERS = (money.format_amount, money.format_transaction_amount)


def _without_amount_serializers(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_amount_serializers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: value if key == "metadata" else _without_amount_serializers(value)
        for key, value in schema.items()
        if not (key == "serialization" and value.get("function") in _AMOUNT_SERIALIZERS)
    }


def canonical_validator(schema: cs.CoreSchema) -> SchemaValidator:
    """A validator of `schema` with every type of _CANONICAL_FORMS taking its canonical form only."""
    canonical = _canonical(schema)
    with _built_anew(_models_in(canonical)):
        return SchemaValidator(canonical)


def _canonical(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_canonical(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind == "union":
        # Left to right, the full validation takes the first member that takes the record. The canonical form of a
        # later member could take a record that an earlier one takes only in full (a cancel that also carries a
        # journal's lines, with an integer amount): only the first member is tried here, the rest in full.
        if schema.get("mode") != "left_to_right":
            raise ValueError(
                f"no canonical form of a {schema.get('mode', 'smart')} union: it may choose another member"
            )
        first = schema["choices"][0]
        return _canonical(first[0] if isinstance(first, tuple) else first)
    if kind in ("function-before", "function-wrap"):
        function = schema["function"]["function"]
        if function in _CANONICAL_FORMS:
            return _CANONICAL_FORMS[function]
        if getattr(function, "__func__", function) in messages.NOT_IN_THE_CANONICAL_FORM:
            return _canonical(schema["schema"])
    if kind == "default" and schema.get("default_factory") is messages.new_message_id:
        # ContractMessage requires a parsed message's id (its before-validator, left out here): no default.
        return _canonical(schema["schema"])
    return {key: value if key in ("metadata", "serialization") else _canonical(value) for key, value in schema.items()}


def _models_in(schema: Any, found: set[type] | None = None) -> set[type]:
    found = set() if found is None else found
    if isinstance(schema, list):
        for s in schema:
            _models_in(s, found)
    elif isinstance(schema, dict):
        if schema.get("type") == "model":
            found.add(schema["cls"])
        for key, value in schema.items():
            if key not in ("metadata", "serialization"):
                _models_in(value, found)
    return found


@contextmanager
def _built_anew(models: set[type]) -> Iterator[None]:
    """pydantic-core builds a model schema of a complete model class as that class's own validator or serializer (its
    "prebuilt" one, read from `__pydantic_complete__` in the class's __dict__), which would be the full one again.
    While a copy is built, the classes are marked incomplete; that is read only when one is built."""
    marks = {model: model.__dict__["__pydantic_complete__"] for model in models}  # every model class has its own
    try:
        for model in models:
            type.__setattr__(model, "__pydantic_complete__", False)
        yield
    finally:
        for model, mark in marks.items():
            type.__setattr__(model, "__pydantic_complete__", mark)
