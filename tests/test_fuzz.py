"""The whole OpenAPI spec fuzzed with schemathesis: never a 5xx, and every response is what the spec says."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from api import create_app

KEY = "fuzz-test-key"
EXAMPLES_PER_OPERATION = 50


@pytest.fixture
def secured_app(database_url):
    return create_app(
        {
            "TESTING": False,  # errors become responses, as in production, so a 500 is seen as one
            "DATABASE_URL": database_url,
            "RUN_WORKERS": False,
            "API_KEYS": (KEY,),
        }
    )


def test_every_operation_answers_as_its_spec_says(secured_app):
    """Each operation, with valid and invalid input; its checks include that the key is enforced."""
    auth = {"Authorization": f"Bearer {KEY}"}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", secured_app, headers=auth)
    failures, examples, started = {}, 0, time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case):
            nonlocal examples
            examples += 1
            # Schema-valid is not always acceptable: an unknown timezone, a time before 1970.
            case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

        try:
            conforms()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports an ExceptionGroup
            failures[operation.label] = str(exc)
    print(f"schemathesis: {examples} examples in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
