"""Tunnels through a fake cloudflared executable that logs like the real one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from scripts.actions_log import JobLog
from scripts.tunnel import (NamedTunnel, QuickTunnel, TunnelCredential, TunnelError, cloudflared_binary,
                            tunnel_credentials)

FAKE = str(Path(__file__).with_name("fake_cloudflared.py"))
TOKEN = "eyJhIjoiYWNjb3VudCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0="


def test_quick_tunnel_reads_the_url_and_stops_on_sigterm(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_CLOUDFLARED_RECORD", str(record))
    lines: list[str] = []
    tunnel = QuickTunnel("http://127.0.0.1:8101", binary=FAKE, log=lines.append)
    try:
        assert tunnel.start(timeout=10) == "https://plain-fuzzy-words-example.trycloudflare.com"
        assert tunnel.alive()
    finally:
        tunnel.stop(timeout=5)
    assert not tunnel.alive()
    argv = json.loads(record.read_text().splitlines()[0])["argv"]
    assert argv == ["tunnel", "--no-autoupdate", "--url", "http://127.0.0.1:8101"]


def test_named_tunnel_gets_its_token_by_environment_and_never_logs_it(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_CLOUDFLARED_RECORD", str(record))
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "leak")
    out = io.StringIO()
    log = JobLog(out, on_actions=True)
    log.mask(TOKEN)
    tunnel = NamedTunnel(TunnelCredential(TOKEN, "smollm2-135m.example.com"), "ignored",
                         binary=FAKE, log=lambda line: log.info(f"cloudflared: {line}"))
    try:
        assert tunnel.start(timeout=10) == "https://smollm2-135m.example.com"
    finally:
        tunnel.stop(timeout=5)
    seen = json.loads(record.read_text().splitlines()[0])
    assert seen["token_given"] and not seen["token_in_argv"]
    assert seen["argv"] == ["tunnel", "--no-autoupdate", "--grace-period", "300s", "run"]
    text = out.getvalue()
    # The only occurrence is the ::add-mask:: command, which the Actions runner consumes.
    assert text.count(TOKEN) == 1 and text.startswith(f"::add-mask::{TOKEN}\n")
    assert "token is ***" in text


def test_a_cloudflared_that_exits_or_stays_silent_fails_clearly(monkeypatch):
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "fail")
    with pytest.raises(TunnelError, match="exited with 1"):
        QuickTunnel("http://127.0.0.1:1", binary=FAKE, log=lambda _: None).start(timeout=10)
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "silent")
    tunnel = QuickTunnel("http://127.0.0.1:1", binary=FAKE, log=lambda _: None)
    with pytest.raises(TunnelError, match="no tunnel after"):
        tunnel.start(timeout=1.5)
    assert not tunnel.alive()


def test_fake_on_path_is_found(tmp_path, monkeypatch):
    link = tmp_path / "cloudflared"
    link.symlink_to(FAKE)
    monkeypatch.delenv("ARENA_CLOUDFLARED", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cloudflared_binary() == str(link)
    with pytest.raises(TunnelError):
        cloudflared_binary(str(tmp_path / "missing"))


def test_tunnels_json_shapes_and_errors_never_echo_tokens():
    parsed = tunnel_credentials(json.dumps({"m": {"token": "t1", "hostname": "m.example.com"}, "g": "t2"}))
    assert parsed == {"m": TunnelCredential("t1", "m.example.com"), "g": TunnelCredential("t2")}
    assert tunnel_credentials("") == {}
    with pytest.raises(TunnelError) as err:
        tunnel_credentials('{"m": {"token": "' + TOKEN + '"')
    assert TOKEN not in str(err.value)
    with pytest.raises(TunnelError):
        tunnel_credentials('{"m": {"hostname": "x"}}')


def test_job_log_redacts_registered_secrets_off_actions():
    out = io.StringIO()
    log = JobLog(out, on_actions=False)
    log.mask("supersecretvalue")
    log.mask("abc")                      # too short to be a secret; never masked
    log.error("failed with supersecretvalue in it")
    assert "supersecretvalue" not in out.getvalue() and "***" in out.getvalue()
    assert "::add-mask::" not in out.getvalue()


def test_choose_tunnel_picks_by_kind_and_masks_every_token(monkeypatch):
    from scripts.tunnel import DirectUrl, choose_tunnel

    monkeypatch.setenv("TUNNELS_JSON", json.dumps({"m": {"token": TOKEN, "hostname": "m.example.com"},
                                                   "other": TOKEN[::-1]}))
    out = io.StringIO()
    log = JobLog(out, on_actions=True)
    common = dict(hostname="m", local_url="http://127.0.0.1:8101", base_domain="example.org", job_log=log,
                  cloudflared=FAKE)
    named = choose_tunnel("auto", label="m", **common)
    assert isinstance(named, NamedTunnel) and named.public_url == "https://m.example.com"
    assert f"::add-mask::{TOKEN}" in out.getvalue() and f"::add-mask::{TOKEN[::-1]}" in out.getvalue()
    assert isinstance(choose_tunnel("auto", label="no-token", **common), QuickTunnel)
    assert isinstance(choose_tunnel("quick", label="m", **common), QuickTunnel)
    direct = choose_tunnel("none", label="m", public_url="https://given.example", **common)
    assert isinstance(direct, DirectUrl) and direct.start(1) == "https://given.example"
    assert choose_tunnel("none", label="m", **common).start(1) == "http://127.0.0.1:8101"
    with pytest.raises(TunnelError, match="no token for no-token"):
        choose_tunnel("named", label="no-token", **common)


def test_choose_tunnel_defaults_a_named_tunnels_host_to_the_base_domain(monkeypatch):
    from scripts.tunnel import choose_tunnel

    monkeypatch.setenv("TUNNELS_JSON", json.dumps({"arena": TOKEN}))
    tunnel = choose_tunnel("auto", label="arena", hostname="arena", local_url="http://127.0.0.1:8080",
                           base_domain="example.org", job_log=JobLog(io.StringIO(), on_actions=False),
                           cloudflared=FAKE)
    assert tunnel.public_url == "https://arena.example.org"
