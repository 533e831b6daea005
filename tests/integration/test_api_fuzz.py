"""Schemathesis against the running stack's own OpenAPI document: every GET operation gets a
bounded number of generated cases, with valid and with invalid parameters, and every response
must be no server error and match the document (status code, content type, headers, body
schema; invalid input refused with a 4xx). What ran goes to artifacts/api-fuzz.tsv.

Driven from one test with Hypothesis directly (schemathesis' own strategies and checks):
schemathesis' pytest plugin (``from_fixture(...).parametrize()``) does not run under the
pinned pytest 9 (it sets ``Function._nodeid``, which pytest 9 no longer has)."""

from __future__ import annotations

import time
from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

EXAMPLES = 100  # generated cases per operation (valid and invalid parameters mixed)
# /api/stream is left out: a server-sent event stream that never ends by design (a response
# that never completes); tests/integration/test_pipeline.py reads it properly.
SKIPPED = {"/api/stream"}
# Every check but "a schema-valid request must be accepted": the API refuses some combinations
# of individually valid parameters with 422 and a message, by design (README, HTTP API): end
# not after start, neither or both of q and like, more than 20,000 buckets, an unknown step or
# field name. OpenAPI parameters cannot state such rules.
EXCLUDED_CHECKS = [positive_data_acceptance]


def test_api_fuzz(stack) -> None:
    stack.wait_for("healthz", lambda: stack.get("/healthz").status_code == 200, timeout=120)
    schema = schemathesis.openapi.from_url(f"{stack.api}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    gets = [op for op in operations if op.method.upper() == "GET" and op.path not in SKIPPED]
    assert {op.path for op in gets} >= {"/healthz", "/api/search", "/api/news", "/api/series"}

    ran: Counter[str] = Counter()
    status: Counter[tuple[str, int]] = Counter()
    failures: dict[str, list[str]] = {}
    started = time.monotonic()

    def fuzz(op) -> None:
        cases = st.one_of(
            op.as_strategy(generation_mode=GenerationMode.POSITIVE),
            op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @hypothesis.given(case=cases)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same cases every run
            database=None,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            ran[op.label] += 1
            try:
                response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS, timeout=60)
            except (Exception, BaseExceptionGroup) as exc:  # collected: every operation runs
                found = failures.setdefault(op.label, [])
                if len(found) < 3:
                    found.append(f"{type(exc).__name__}: {str(exc)[:1500]}")
                return
            status[(op.label, response.status_code)] += 1

        run()

    for op in gets:
        fuzz(op)

    elapsed = time.monotonic() - started
    ARTIFACTS.mkdir(exist_ok=True)
    lines = ["operation\tcases\tstatus codes\tfailures"]
    for op in gets:
        codes = ", ".join(f"{code}: {n}" for (label, code), n in sorted(status.items()) if label == op.label)
        lines.append(f"{op.label}\t{ran[op.label]}\t{codes}\t{len(failures.get(op.label, []))}")
    lines.append(f"total\t{sum(ran.values())}\t{elapsed:.0f} s\t{sum(map(len, failures.values()))}")
    (ARTIFACTS / "api-fuzz.tsv").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    assert not failures, "\n\n".join(f"{label}:\n" + "\n".join(f) for label, f in failures.items())
    assert all(ran[op.label] > 0 for op in gets)
    server_errors = {k: n for k, n in status.items() if k[1] >= 500}
    assert not server_errors, server_errors
