from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kredit_shared.money import Amount, Currency, round_money, split_proportionally


class Priced(BaseModel):
    amount: Amount
    currency: Currency


def test_amounts_serialise_as_two_decimal_strings():
    assert Priced(amount="1000", currency="USD").model_dump_json() == '{"amount":"1000.00","currency":"USD"}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [(1000.5, "not a JSON number"), ("NaN", "finite"), ("Infinity", "finite"), ("1.005", "more than two decimals"),
     ("ten", "not a decimal"), (True, "not a JSON number")],
)
def test_amounts_reject_floats_nan_and_sub_cent_values(value, reason):
    with pytest.raises(ValidationError, match=reason):
        Priced(amount=value, currency="USD")


@pytest.mark.parametrize("code", ["usd", "XYZ", "US", 840])
def test_currencies_must_be_iso_4217_codes(code):
    with pytest.raises(ValidationError, match="ISO 4217"):
        Priced(amount="1.00", currency=code)


def test_rounding_is_half_up_to_the_cent():
    assert round_money(Decimal("2.345")) == Decimal("2.35")
    assert round_money(Decimal("-2.345")) == Decimal("-2.35")
    assert round_money(Decimal("9.8979")) == Decimal("9.90")


@given(
    total=st.decimals(min_value=-10**6, max_value=10**6, places=2),
    weights=st.lists(st.decimals(min_value=0, max_value=10**4, places=2), min_size=1, max_size=8).filter(
        lambda ws: sum(ws) > 0
    ),
)
def test_proportional_splits_always_add_up_to_the_total(total, weights):
    parts = split_proportionally(total, weights)
    assert sum(parts) == round_money(total)
    assert all(p == round_money(p) for p in parts)
