"""Turning validation errors into one line a person can act on (DLQ headers, start-up messages)."""

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, whole: str = "message") -> str:
    """E.g. "lines.0.amount: amount 1.005 has more than two decimals; currency: Field required"."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or whole
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
