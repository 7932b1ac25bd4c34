"""Both apps serve HTTPS themselves with a certificate and key from settings (a self-signed
certificate for 127.0.0.1, made here with openssl)."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from tests.harness import ManagedProcess, free_port, wait_until


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def serve_https(name: str, args: list[str], env: dict[str, str], cert, path: str) -> ManagedProcess:
    port = free_port()
    proc = ManagedProcess(name, [*args, "--host", "127.0.0.1", "--port", str(port)], port, env)
    proc.start()

    def answers() -> bool:
        try:
            trust = ssl.create_default_context(cafile=str(cert))
            return httpx.get(f"https://127.0.0.1:{port}{path}", verify=trust, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=120, what=f"{name} over https")
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.mark.parametrize("kind", ["gateway", "service"])
def test_the_app_serves_https_with_the_configured_certificate(certificate, tmp_path, kind):
    cert, key = certificate
    if kind == "gateway":
        env = {"ARENA_GATEWAY_TLS_CERT": str(cert), "ARENA_GATEWAY_TLS_KEY": str(key),
               "ARENA_GATEWAY_DB_PATH": str(tmp_path / "gw.sqlite3")}
        proc = serve_https("tls-gateway", ["gateway"], env, cert, "/health/live")
    else:
        env = {"ARENA_SERVICE_TLS_CERT": str(cert), "ARENA_SERVICE_TLS_KEY": str(key)}
        proc = serve_https("tls-service", ["serve", "smollm2-135m"], env, cert, "/health/live")
    try:
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{proc.port}/health/live", timeout=2)
        with pytest.raises(httpx.ConnectError):  # nor is the certificate trusted by default
            httpx.get(f"https://127.0.0.1:{proc.port}/health/live", timeout=2)
    finally:
        proc.stop()


def test_a_certificate_without_its_key_is_refused_at_start(certificate, tmp_path):
    cert, _ = certificate
    port = free_port()
    proc = ManagedProcess("tls-half", ["gateway", "--host", "127.0.0.1", "--port", str(port)], port,
                          {"ARENA_GATEWAY_TLS_CERT": str(cert), "ARENA_GATEWAY_DB_PATH": str(tmp_path / "gw.sqlite3")})
    proc.start()
    try:
        assert proc.wait_exit(60) == 2
        assert "tls_key" in proc.log_tail()
    finally:
        proc.stop()
