"""A hostile client and a refusing instance, against a real gateway process (issue 11, items 1-3)."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import GEMMA, SMOL, assert_openai_error, chat_body, gateway_env, wait_ready, wait_until

NESTING_BOMB = b"[" * 100_000
JSON = {"content-type": "application/json"}


@pytest.fixture
def two_models(tmp_path, fake_upstreams, gateways):
    smol, gemma = fake_upstreams(model=SMOL), fake_upstreams(model=GEMMA)
    gateway = gateways(gateway_env(tmp_path, {SMOL: [smol.url], GEMMA: [gemma.url]}, max_body_bytes="65536"))
    wait_ready(gateway, f"{SMOL}-0", f"{GEMMA}-0")
    return gateway, smol, gemma


def _chunked(total: int, piece: int = 16 * 1024):
    """A body without Content-Length, sent in pieces: only a limit applied while reading stops it."""
    sent = 0
    while sent < total:
        yield b" " * piece
        sent += piece


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/battles", "/api/battles/nope/vote"])
def test_bodies_over_the_limit_are_refused_while_read(two_models, path):
    gateway, *_ = two_models
    url = gateway.url + path
    assert_openai_error(httpx.post(url, content=b"x" * 70_000, headers=JSON, timeout=10), 413, "request_too_large")
    # Streamed without a length, far past the limit: refused once the limit is crossed.
    assert_openai_error(httpx.post(url, content=_chunked(8 * 1024 * 1024), headers=JSON, timeout=30), 413,
                        "request_too_large")
    # The gateway still serves.
    assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/api/battles"])
def test_a_json_nesting_bomb_is_a_400(two_models, path):
    gateway, *_ = two_models
    response = httpx.post(gateway.url + path, content=b"[" * 60_000, headers=JSON, timeout=10)
    assert_openai_error(response, 400)
    assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10).status_code == 200


def test_a_battle_side_shows_the_models_refusal_and_is_recorded_as_an_error(two_models):
    gateway, smol, gemma = two_models
    refusal = {"status": 400, "error": {"message": "This model's context is 2048 tokens; the prompt has 4100.",
                                        "type": "invalid_request_error", "param": "messages",
                                        "code": "context_length_exceeded"}}
    smol.control(reject=refusal)
    gemma.control(reject=refusal)
    created = httpx.post(gateway.url + "/api/battles", json={"prompt": "word " * 1500}, timeout=10)
    assert created.status_code == 201, created.text
    battle = created.json()
    for side in ("a", "b"):
        response = httpx.post(gateway.url + battle["sides"][side]["stream_url"],
                              headers={"X-Battle-Token": battle["token"]}, timeout=10)
        error = assert_openai_error(response, 400, "context_length_exceeded")
        label = "Model A" if side == "a" else "Model B"
        assert error["message"].startswith(f"{label} could not answer: ") and "context" in error["message"]
        assert SMOL not in error["message"] and GEMMA not in error["message"]
    sides = httpx.get(f"{gateway.url}/api/battles/{battle['id']}", headers={"X-Battle-Token": battle["token"]},
                      timeout=10).json()["sides"]
    assert sides["a"]["status"] == sides["b"]["status"] == "error"


def test_a_battle_side_left_before_its_first_token_still_ends(two_models):
    # The browser's Stop (or a closed tab) while the model still reads the prompt: the gateway
    # gets the first chunk after the client left. The side must end (stopped, or done if the
    # relay finished first), not stay "streaming" for ever.
    gateway, smol, gemma = two_models
    for fake in (smol, gemma):
        fake.control(delay=1.5)
    battle = httpx.post(gateway.url + "/api/battles", json={"prompt": "Hi"}, timeout=10).json()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + battle["sides"]["a"]["stream_url"], headers={"X-Battle-Token": battle["token"]},
                   timeout=httpx.Timeout(10, read=0.3))

    def side_a() -> str:
        return httpx.get(f"{gateway.url}/api/battles/{battle['id']}", timeout=10).json()["sides"]["a"]["status"]

    wait_until(lambda: side_a() in ("stopped", "done"), 15, what="the abandoned side recorded as ended")


@pytest.mark.parametrize("path", ["/", "/leaderboard", "/status", "/docs"])
def test_every_html_answer_carries_a_content_security_policy(two_models, path):
    gateway, *_ = two_models
    response = httpx.get(gateway.url + path, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
