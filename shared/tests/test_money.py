from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from kredit_shared.money import MAX_AMOUNT, Amount, Currency, parse_amount, round_money


class Priced(BaseModel):
    amount: Amount
    currency: Currency


def test_amounts_serialise_as_two_decimal_strings():
    assert Priced(amount="1000", currency="USD").model_dump_json() == '{"amount":"1000.00","currency":"USD"}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1000.5, "not a JSON number"),
        ("NaN", "not a decimal string"),
        ("Infinity", "not a decimal string"),
        (Decimal("NaN"), "finite"),
        ("1.005", "1.005 has more than two decimals"),
        (Decimal("1.005"), "more than two decimals"),
        ("ten", "not a decimal"),
        (True, "not a JSON number"),
    ],
)
def test_amounts_reject_floats_nan_and_sub_cent_values(value, reason):
    with pytest.raises(ValidationError, match=reason):
        Priced(amount=value, currency="USD")


@pytest.mark.parametrize(
    "value",
    [
        "1e26",
        "1e309",
        "1" * 28,
        10**26,
        -(10**16),
        "1000000000000000",
        "-1000000000000000.00",
        "9" * 400,
        Decimal("1e26"),
        Decimal("-1E+400"),
    ],
)
def test_amounts_beyond_15_integer_digits_are_a_value_error_not_a_decimal_signal(value):
    # InvalidOperation is not a ValueError: it escaped pydantic and crashed HTTP routes with a 500.
    with pytest.raises(ValueError, match="not a decimal string|exceeds the largest amount"):
        parse_amount(value)
    with pytest.raises(ValidationError):
        Priced(amount=value, currency="USD")


@pytest.mark.parametrize(
    "value", [" 1.00 ", "1_0.00", "\uff11\uff12", "1E+2", "+1.00", "1.", ".5", "1\n", "0x10", "١٢"]
)
def test_amount_strings_must_match_the_documented_pattern_exactly(value):
    with pytest.raises(ValidationError, match="not a decimal string"):
        Priced(amount=value, currency="USD")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("999999999999999.99", MAX_AMOUNT),
        ("-999999999999999.99", -MAX_AMOUNT),
        ("0", Decimal("0.00")),
        ("-0.5", Decimal("-0.50")),
        (1000, Decimal("1000.00")),
        (999999999999999, Decimal("999999999999999.00")),
        (Decimal("1E+2"), Decimal("100.00")),
        (1000.0, Decimal("1000.00")),  # JSON Schema: 1000.0 is an integer
    ],
)
def test_amounts_up_to_15_integer_digits_are_accepted(value, parsed):
    assert Priced(amount=value, currency="USD").amount == parsed


def test_the_amount_schema_states_the_pattern_and_the_integer_bounds():
    schema = Priced.model_json_schema()["properties"]["amount"]
    string, integer = schema["anyOf"]
    assert string["pattern"] == r"^-?[0-9]{1,15}(\.[0-9]{1,2})?$"
    assert integer == {"type": "integer", "minimum": -999999999999999, "maximum": 999999999999999}
    assert Priced.model_json_schema(mode="serialization")["properties"]["amount"]["type"] == "string"


@pytest.mark.parametrize("code", ["usd", "XYZ", "US", 840])
def test_currencies_must_be_iso_4217_codes(code):
    with pytest.raises(ValidationError, match="ISO 4217"):
        Priced(amount="1.00", currency=code)


def test_rounding_is_half_up_to_the_cent():
    assert round_money(Decimal("2.345")) == Decimal("2.35")
    assert round_money(Decimal("-2.345")) == Decimal("-2.35")
    assert round_money(Decimal("9.8979")) == Decimal("9.90")
