"""The fake upstream's admin needs its token and JSON; bad lengths, long delays and header tricks are refused; its log is bounded."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from kasparro.fake_upstream import FakeUpstream, server

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data" / "upstream"
FAULT = {"provider": "coingecko", "kind": "500"}
ADMIN_CALLS = [("GET", "/__admin/state"), ("GET", "/__admin/requests"), ("POST", "/__admin/advance"),
               ("POST", "/__admin/reset"), ("POST", "/__admin/faults"), ("DELETE", "/__admin/faults")]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(DATA_DIR) as fake:
        yield fake


def untouched(fake: FakeUpstream) -> bool:
    state = fake.state()
    return state["faults"] == [] and {p["index"] for p in state["providers"].values()} == {0}


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic {token}", "{token}", "Bearer "])
def test_admin_without_its_token_is_refused_and_changes_nothing(upstream: FakeUpstream, method: str, path: str,
                                                                authorization: str | None) -> None:
    headers = {"Authorization": authorization.format(token=upstream.admin_token)} if authorization else {}
    answer = requests.request(method, upstream.base_url + path, json=FAULT, headers=headers, timeout=5)

    assert answer.status_code == 401 and "FAKE_UPSTREAM_ADMIN_TOKEN" in answer.json()["error"]
    assert untouched(upstream)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_cross_site_form_post_cannot_queue_a_fault(upstream: FakeUpstream, content_type: str) -> None:
    body = b'{"provider": "coingecko", "kind": "500"}'
    url = upstream.base_url + "/__admin/faults"

    forged = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=5)
    with_token = requests.post(url, data=body, headers={"Content-Type": content_type, **upstream.admin_headers},
                               timeout=5)

    assert (forged.status_code, with_token.status_code) == (401, 415)
    assert untouched(upstream)


def raw_request(fake: FakeUpstream, head: bytes) -> bytes:
    """Send `head` as is and return what the server answers before closing, or within 3 s."""
    port = int(fake.base_url.rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(head)
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


BAD_LENGTHS = st.one_of(
    st.integers(max_value=-1).map(str),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=20).filter(
        lambda text: not text.isdigit()),
    st.text("0123456789", min_size=19, max_size=60),
    st.tuples(st.integers(0, 99), st.integers(100, 200)).map(lambda pair: f"{pair[0]}\r\nContent-Length: {pair[1]}"),
)


@settings(max_examples=40, deadline=None)
@given(length=BAD_LENGTHS, path=st.sampled_from(["/__admin/faults", "/coingecko/api/v3/ping"]))
def test_an_invalid_content_length_is_answered_400_at_once(upstream: FakeUpstream, length: str, path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {upstream.admin_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()

    answer = raw_request(upstream, head)

    assert answer.startswith(b"HTTP/1.0 400 "), answer[:200]
    assert b"invalid Content-Length" in answer


def test_admin_bodies_over_their_limit_are_413_and_invalid_json_400(upstream: FakeUpstream) -> None:
    url = upstream.base_url + "/__admin/faults"

    huge = requests.post(url, data=b" " * (64 * 1024 + 1), headers={"Content-Type": "application/json",
                                                                   **upstream.admin_headers}, timeout=5)
    broken = requests.post(url, data=b"{", headers={"Content-Type": "application/json", **upstream.admin_headers},
                           timeout=5)

    assert (huge.status_code, broken.status_code) == (413, 400)
    assert untouched(upstream)


@pytest.mark.parametrize("params", [{"kind": "slow", "delay": 3600}, {"kind": "slow", "delay": -1},
                                    {"kind": "slow", "delay": "forever"}, {"kind": "drip", "interval": 0},
                                    {"kind": "short_body", "hold": 10**9}, {"kind": "endless", "seconds": 10**9},
                                    {"kind": "429", "retry_after": "1\r\nSet-Cookie: stolen=1"}])
def test_unbounded_or_header_splitting_faults_are_refused(upstream: FakeUpstream, params: dict) -> None:
    answer = requests.post(upstream.base_url + "/__admin/faults", json={"provider": "coingecko", **params},
                           headers=upstream.admin_headers, timeout=5)

    assert answer.status_code == 400
    assert untouched(upstream)


def test_the_request_log_keeps_only_the_newest_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "REQUEST_LOG_SIZE", 5)
    with FakeUpstream(DATA_DIR) as fake:
        for page in range(1, 9):
            requests.get(fake.coingecko_url + "/coins/markets", params={"vs_currency": "usd", "page": page},
                         timeout=5)
        log = fake.requests

    assert [entry["query"]["page"] for entry in log] == ["4", "5", "6", "7", "8"]


def serve_cli(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start `python -m kasparro.fake_upstream` on a free port and return it with its base URL."""
    process = subprocess.Popen([sys.executable, "-m", "kasparro.fake_upstream", "--port", "0"], cwd=ROOT,
                               env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"serving (http://\S+)", line)
        if found:
            return process, found.group(1)
    raise AssertionError("the fake upstream never said where it serves")


@pytest.mark.parametrize("token", ["", "a-demo-token"])
def test_the_command_line_takes_its_token_from_the_environment_and_locks_admin_without_one(token: str) -> None:
    process, url = serve_cli({"FAKE_UPSTREAM_ADMIN_TOKEN": token})
    try:
        anonymous = requests.get(url + "/__admin/state", timeout=5).status_code
        with_token = requests.get(url + "/__admin/state", headers={"Authorization": f"Bearer {token}"},
                                  timeout=5).status_code
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert anonymous == 401
    assert with_token == (200 if token else 401)


def test_stop_ends_an_endless_body_for_a_client_that_keeps_reading() -> None:
    fake = FakeUpstream(DATA_DIR)
    fake.start()
    fake.inject("coingecko", "endless")
    answer = requests.get(fake.coingecko_url + "/coins/markets", params={"vs_currency": "usd"}, stream=True,
                          timeout=5)
    started = time.monotonic()
    fake.stop()
    for _ in answer.iter_content(1 << 20):
        pass  # ends only when the server stops sending

    assert time.monotonic() - started < 5
