"""The documents collections sends: collection letters, rendered as HTML (Jinja2, autoescaped).

A letter is rendered once, when it is created, and kept as sent: a later change of the setup's
texts or of the template does not rewrite a letter the customer already has."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "documents"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
)


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def render_collection_letter(*, company: str, letter: Any, items: list[Any], text: str) -> str:
    """`letter`: the letter's row (id, date, customer, code, currency, total, fee); `items`: its invoices."""
    return _env.get_template("collection_letter.html").render(
        company=company, letter=letter, items=items, text=text, money=_money
    )
