"""kredit_shared.http.refusals_as_problems: a domain refusal answers 4xx with its message."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from kredit_shared.http import refusals_as_problems


class Refused(ValueError):
    pass


class Missing(Refused):
    pass


@pytest.mark.parametrize(("error", "status"), [(Missing("no such thing"), 404), (Refused("no such thing"), 422)])
def test_a_refusal_answers_the_status_of_its_class_with_its_message(error, status):
    with pytest.raises(HTTPException) as answered, refusals_as_problems(Refused, {Missing: 404}):
        raise error
    assert (answered.value.status_code, answered.value.detail) == (status, "no such thing")


def test_other_errors_pass_through():
    with pytest.raises(KeyError), refusals_as_problems(Refused):
        raise KeyError("a bug")
