"""Schemathesis against a real `ultrasonic serve`: every operation of its /openapi.json, with Schemathesis'
checks (no 5xx, only documented statuses, content types, headers and bodies that match their schemas,
invalid input refused, the token enforced where it is declared), once without a token and once with one.

One check is left out for POST /predict only: positive_data_acceptance expects a 2xx for any request the
schema allows, but no schema can say "bytes that decode to an image": random bytes in `file` get 415 or
422, as they should. Bounded for CI (MAX_EXAMPLES per operation, derandomised); ULTRASONIC_SCHEMATHESIS_
EXAMPLES raises it for a longer hunt.
"""

from __future__ import annotations

import os

import pytest

from live_server import LiveServer

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra: pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.once]

MAX_EXAMPLES = int(os.environ.get("ULTRASONIC_SCHEMATHESIS_EXAMPLES", "25"))
TOKEN = "schemathesis-token"
BOUNDED = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))


def _live(tiny_run, tmp_path_factory, *args: str) -> LiveServer:
    folder = tmp_path_factory.mktemp("schemathesis")
    return LiveServer(tiny_run, folder / "server.log", "--db", str(folder / "audit.sqlite"), *args)


@pytest.fixture(scope="module")
def open_server(tiny_run, tmp_path_factory):
    live = _live(tiny_run, tmp_path_factory)
    yield live
    assert "Traceback" not in live.log(), live.log()[-3000:]
    live.stop()


@pytest.fixture(scope="module")
def token_server(tiny_run, tmp_path_factory):
    live = _live(tiny_run, tmp_path_factory, "--token", TOKEN)
    yield live
    assert "Traceback" not in live.log(), live.log()[-3000:]
    live.stop()


def _check_every_operation(server: LiveServer, token: str | None = None) -> list[str]:
    """Each operation of the server's schema, in both generation modes (data that fits the schema and data
    that does not), MAX_EXAMPLES each; returns what was run, so the test can see nothing was skipped.
    The token goes through Schemathesis' own auth setting (for the scheme the schema declares), so that
    its checks know which requests carry it (ignored_auth sends some without)."""
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}} if token else {})
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            @BOUNDED
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                _validate(case)

            try:
                check()
            except Unsatisfiable:  # no invalid request exists for an operation without parameters (/health)
                assert mode is GenerationMode.NEGATIVE, operation.path
                continue
            ran.append(f"{operation.method.upper()} {operation.path} {mode.value}")
    return ran


def _validate(case) -> None:
    excluded = [positive_data_acceptance] if (case.method, case.path) == ("POST", "/predict") else []
    case.call_and_validate(excluded_checks=excluded, timeout=60)


OPERATIONS = {"GET /health", "GET /model", "POST /predict", "GET /cam/{cam_id}.png", "GET /preview/{preview_id}.png",
              "GET /predictions"}


def test_without_a_token_the_service_keeps_its_schema(open_server):
    ran = _check_every_operation(open_server)
    assert {r.rsplit(" ", 1)[0] for r in ran} == OPERATIONS and len(ran) >= 8


def test_with_a_token_the_service_keeps_its_schema(token_server):
    ran = _check_every_operation(token_server, TOKEN)
    assert {r.rsplit(" ", 1)[0] for r in ran} == OPERATIONS
    access = token_server.log().splitlines()
    assert any('"GET /predictions' in line and line.endswith("200 OK") for line in access)  # the token was sent
    assert any('"GET /predictions' in line and "401" in line for line in access)  # and sometimes not (ignored_auth)
