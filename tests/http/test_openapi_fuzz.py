"""Schemathesis against every service's OpenAPI, with a valid token (every role), as `make fuzz` runs
it (scripts/fuzz_http.py) but bounded for the test suite: the coverage and fuzzing phases with
FUZZ_HTTP_EXAMPLES examples per operation (default 5; `make fuzz` runs every phase with 300).

No answer may be a 5xx, and every answer must conform to the schema (status documented, body of the
documented shape, content type, headers); schemathesis also checks that each secured operation
refuses a missing or wrong token."""

from __future__ import annotations

import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import fuzz_http

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "5"))


def test_schemathesis_finds_no_5xx_and_no_nonconforming_answer_on_any_service(kafka, tmp_path):
    names = list(fuzz_http.SERVICES)
    with ExitStack() as stack:
        ports = fuzz_http.start_services(
            stack,
            names,
            kafka.bootstrap_servers,
            tmp_path,
            {"TOPIC_PREFIX": f"{kafka.topic_prefix}fuzz{uuid.uuid4().hex[:8]}.", "PYTHONUNBUFFERED": "1"},
        )
        with ThreadPoolExecutor(len(names)) as pool:
            results = list(
                pool.map(
                    lambda name: fuzz_http.fuzz(
                        name, ports[name], tmp_path, EXAMPLES, seed=14, workers=1, phases="coverage,fuzzing"
                    ),
                    names,
                )
            )
    for r in results:  # the counts for the record (pytest -s shows them)
        print(f"{r['service']}: {r['operations']} operations, {r['requests']} requests, {r['5xx']} 5xx")
    assert all(r["operations"] > 0 and r["requests"] >= 10 * r["operations"] for r in results), results
    assert not [e for r in results for e in r["5xx examples"]]
    assert not [f"{r['service']}: {f}" for r in results for f in r["failures"]]
