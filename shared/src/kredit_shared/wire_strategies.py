"""Hypothesis strategies for values producers may put on the wire, for the services' property tests (the
fingerprint tests check hand-written canonical JSON against its original definition over generated messages).
Test support: hypothesis is a development dependency, and nothing in production imports this."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from hypothesis import strategies as st

_ALNUM = "ABCXYZabcxyz0189"
IDS = st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM + "._:-", max_size=12))  # ID_PATTERN
CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "KWD", "BHD", "CHF"])
# Any character the contract lets through (no C0 controls nor DEL; free text keeps tab and line breaks),
# with quotes, backslashes, C1 controls and characters beyond the BMP that JSON escapes.
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
NAME_CHARS = st.characters(exclude_categories=_SURROGATES, exclude_characters="".join(map(chr, range(32))) + "\x7f")
TEXT_CHARS = st.one_of(NAME_CHARS, st.sampled_from('\t\n\r"\\/\x85\u2028\U0001f600'))


def amounts(decimals: int, digits: int, *, python_decimals: bool = False) -> st.SearchStrategy[Any]:
    """An amount of up to `digits` digits in a form a producer may send: a string with 0..`decimals` decimals
    (trailing zeros included), an integer, negative zero; with `python_decimals`, also a Decimal (a message
    built in Python)."""
    number = st.integers(min_value=-(10**digits) + 1, max_value=10**digits - 1)
    places = st.integers(min_value=0, max_value=decimals)
    as_text = st.builds(lambda n, p: str(Decimal(n).scaleb(-p)) if p else str(n), number, places)
    forms = [as_text, number, st.sampled_from(["-0", "0.10", "100.00"])]
    if python_decimals:
        forms.append(st.builds(lambda n, p: Decimal(n).scaleb(-p), number, places))
    return st.one_of(forms)
