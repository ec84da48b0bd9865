"""database.ExactDecimal on SQLite: amounts stored as scaled integers come back exactly, in money.tidy's form."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from kredit_shared.database import TRANSACTION_PLACES, ExactDecimal
from kredit_shared.money import MAX_AMOUNT, tidy

SQLITE, POSTGRES = sqlite.dialect(), postgresql.dialect()
AMOUNTS = st.decimals(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT, places=3)


@given(AMOUNTS)
def test_a_transaction_amount_comes_back_as_it_went_in_in_tidy_form(amount: Decimal):
    column = ExactDecimal(TRANSACTION_PLACES)
    stored = column.process_bind_param(amount, SQLITE)
    assert stored == int(amount * 1000)
    read = column.process_result_value(stored, SQLITE)
    expected = tidy(amount.quantize(Decimal("0.001")))
    assert read == amount and str(read) == str(expected)  # "1.23" for 1.230, "0.025" stays
    assert str(column.process_result_value(Decimal(amount), POSTGRES)) == str(expected)


@given(AMOUNTS.map(lambda a: a.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)))
def test_an_accounting_amount_comes_back_with_two_decimals(amount: Decimal):
    column = ExactDecimal(2)
    read = column.process_result_value(column.process_bind_param(amount, SQLITE), SQLITE)
    assert read == amount and read.as_tuple().exponent == -2


@pytest.mark.parametrize(("places", "amount"), [(2, "1.005"), (3, "0.0001"), (2, "-0.001")])
def test_more_decimals_than_the_column_holds_are_refused(places: int, amount: str):
    with pytest.raises(ValueError, match="decimals"):
        ExactDecimal(places).process_bind_param(Decimal(amount), SQLITE)


@given(st.one_of(AMOUNTS, st.integers(min_value=-(10**12), max_value=10**12), AMOUNTS.map(str)))
def test_the_sqlite_bind_processor_stores_what_process_bind_param_does(value: Decimal | int | str):
    """Inserts use bind_processor (TypeDecorator's wrapper left out on SQLite): the same integer for a Decimal, an
    integer or a string, and None for None."""
    column = ExactDecimal(TRANSACTION_PLACES)
    process = column.bind_processor(SQLITE)
    assert process is not None
    assert process(value) == column.process_bind_param(value, SQLITE)
    assert process(None) is None


def test_the_sqlite_bind_processor_refuses_more_decimals_too():
    process = ExactDecimal(2).bind_processor(SQLITE)
    assert process is not None
    with pytest.raises(ValueError, match="1.005 has more than 2 decimals"):
        process(Decimal("1.005"))
