"""Request bodies are bounded before any parser reads them: in bytes, and in JSON nesting depth."""
from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from kasparro.api.bodies import json_depth
from tests.api.conftest import AUTH

POSTS = ("/run-etl", "/runs", "/backfill", "/reprocess", "/replay-rejects")
JSON = {**AUTH, "Content-Type": "application/json"}


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_TEXT = st.text(alphabet=st.sampled_from('ab"\\[]{}:,\u00e9\U0001f600'), max_size=8)
_JSON_VALUES = st.recursive(st.none() | st.integers() | _TEXT,
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                            max_leaves=30)


@given(_JSON_VALUES)
def test_the_depth_read_from_the_bytes_is_the_depth_python_parses(value: Any) -> None:
    # Brackets and quotes inside strings (escaped or not) must not count.
    assert json_depth(json.dumps(value).encode()) == _depth(value)
    assert json_depth(json.dumps(value, ensure_ascii=False).encode()) == _depth(value)


def _nested(depth: int, kind: str) -> bytes:
    opener, closer = ("[", "]") if kind == "array" else ('{"a":', "}")
    return (opener * depth + "1" + closer * depth).encode()


_HOSTILE = st.one_of(
    st.builds(_nested, st.integers(33, 200_000), st.sampled_from(["array", "object"])),
    st.binary(max_size=300),
    st.builds(lambda junk: b'{"sources": ["' + junk + b'"]}',
              st.sampled_from([b"\\ud83d", b"\\udfff\\ud800", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\\u0000"])),
)


# Runs these bodies queue (an empty body is a run of every source) go to a queue no worker reads: a run left
# loading after its test would hold locks the next test's TRUNCATE waits on.
@pytest.mark.usefixtures("csv_sources")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_HOSTILE, path=st.sampled_from(POSTS))
def test_no_hostile_body_gets_a_server_error_or_a_traceback(idle_app: Flask, body: bytes, path: str) -> None:
    response = idle_app.test_client().post(path, data=body, headers=JSON)
    assert response.status_code < 500, response.data[:300]
    assert response.is_json and "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["array", "object"])
def test_a_body_nested_past_the_limit_is_a_400_naming_the_setting(client: FlaskClient, kind: str) -> None:
    response = client.post("/run-etl", data=_nested(100_000, kind), headers=JSON)
    assert response.status_code == 400
    assert "MAX_REQUEST_DEPTH (32)" in response.get_json()["error"]["message"]


def test_a_body_over_the_byte_limit_is_a_413_naming_the_setting(client: FlaskClient) -> None:
    body = b'{"sources": ["' + b"a" * (1024 * 1024) + b'"]}'
    response = client.post("/run-etl", data=body, headers=JSON)
    assert response.status_code == 413 and response.is_json
    assert "MAX_REQUEST_BYTES (1048576)" in response.get_json()["error"]["message"]


def test_a_body_sent_without_a_length_is_bounded_too(app: Flask) -> None:
    body = b'{"sources": ["' + b"a" * (2 * 1024 * 1024) + b'"]}'
    environ = EnvironBuilder(path="/run-etl", method="POST", data=body, headers=JSON).get_environ()
    del environ["CONTENT_LENGTH"]  # as a chunked upload arrives: the server reads until the stream ends
    environ["wsgi.input_terminated"] = True
    _, status, headers = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413") and headers["Content-Type"] == "application/json"


@pytest.mark.usefixtures("csv_sources")
def test_a_small_flat_body_still_queues_a_run(idle_app: Flask) -> None:
    response = idle_app.test_client().post("/run-etl", data=json.dumps({"sources": ["tiny"]}), headers=JSON)
    assert response.status_code == 202, response.data
