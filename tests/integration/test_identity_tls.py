"""Identity certificates in real TLS handshakes on loopback, and the node's import path.

The certificates and keys come from :mod:`p2psip.overlay.identity` (our DER, PyNaCl signatures);
Python's ssl (OpenSSL) and the ``openssl`` command are the independent judges.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from p2psip.endpoint.aio.tls import certificate_der, client_context, server_context
from p2psip.overlay import der
from p2psip.overlay.identity import Identity, TLSCredentials, verify_tls_binding
from tests.conftest import require_binary

TIMEOUT = 10.0
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@asynccontextmanager
async def tls_server(ctx: ssl.SSLContext) -> AsyncIterator[tuple[int, list[bytes | None]]]:
    """A TLS echo-once server on loopback; yields its port and the client certificates seen."""
    client_certs: list[bytes | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        client_certs.append(ssl_object.getpeercert(binary_form=True))
        try:
            data = await reader.read(100)
            writer.write(data.upper())
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1], client_certs
    finally:
        server.close()
        await server.wait_closed()


async def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, bytes]:
    """Connect, exchange one message; returns the TLS version and the server certificate DER."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=HOST),
        TIMEOUT,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b"PING"
        return ssl_object.version(), ssl_object.getpeercert(binary_form=True)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def _limited(ctx: ssl.SSLContext, version: str) -> ssl.SSLContext:
    if version == "TLSv1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


@pytest.fixture(name="alice")
def _alice() -> Identity:
    return Identity.generate()


@pytest.fixture(name="alice_creds")
def _alice_creds(alice: Identity) -> TLSCredentials:
    return alice.tls_certificate("alice", _now(), days=1, aors=["sip:alice@p2p.example"])


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
async def test_default_ed25519_certificate_in_a_handshake(
    version: str, alice: Identity, alice_creds: TLSCredentials
) -> None:
    ctx = server_context(alice_creds.certificate_pem, alice_creds.private_key_pem)
    async with tls_server(ctx) as (port, _):
        negotiated, peer = await handshake(port, _limited(client_context(verify=False), version))
    assert negotiated == version
    assert peer == alice_creds.certificate_der
    assert verify_tls_binding(peer, alice.public_key_bytes, _now())
    assert not verify_tls_binding(peer, Identity.generate().public_key_bytes, _now())


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
async def test_mutual_tls_where_openssl_verifies_our_certificates(
    version: str, key_type: str, alice: Identity, alice_creds: TLSCredentials
) -> None:
    """Each side trusts the other's self-signed certificate: OpenSSL checks our signatures."""
    bob = Identity.generate()
    bob_creds = bob.tls_certificate("bob", _now(), days=1, key_type=key_type)  # type: ignore[arg-type]
    server = server_context(
        alice_creds.certificate_pem,
        alice_creds.private_key_pem,
        client_cadata=bob_creds.certificate_pem,
        require_client_cert=True,
    )
    client = client_context(
        verify=True,
        cadata=alice_creds.certificate_pem,
        check_hostname=False,
        cert_pem=bob_creds.certificate_pem,
        key_pem=bob_creds.private_key_pem,
    )
    async with tls_server(server) as (port, client_certs):
        negotiated, peer = await handshake(port, _limited(client, version))
    assert negotiated == version
    assert verify_tls_binding(peer, alice.public_key_bytes, _now())
    assert client_certs == [bob_creds.certificate_der]
    assert verify_tls_binding(client_certs[0], bob.public_key_bytes, _now())
    assert not verify_tls_binding(client_certs[0], alice.public_key_bytes, _now())


async def test_openssl_refuses_a_certificate_whose_signature_is_broken(
    alice_creds: TLSCredentials,
) -> None:
    der_bytes = bytearray(alice_creds.certificate_der)
    der_bytes[-1] ^= 1  # the last octet of the signature
    broken = der.pem_encode("CERTIFICATE", bytes(der_bytes))
    server = server_context(alice_creds.certificate_pem, alice_creds.private_key_pem)
    client = client_context(verify=True, cadata=broken, check_hostname=False)
    async with tls_server(server) as (port, _):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, client)


async def test_identity_certificate_over_the_identity_key(alice: Identity) -> None:
    """Case (a): the certificate's own key is the identity key."""
    cert = alice.certificate_pem("alice", _now(), days=1)
    ctx = server_context(cert, alice.private_key_pem())
    async with tls_server(ctx) as (port, _):
        negotiated, peer = await handshake(port, client_context(verify=False))
    assert negotiated == "TLSv1.3"
    assert peer == certificate_der(cert)
    assert verify_tls_binding(peer, alice.public_key_bytes, _now())
    assert not verify_tls_binding(peer, Identity.generate().public_key_bytes)


async def test_openssl_s_client_connects(
    alice: Identity, alice_creds: TLSCredentials, tmp_path: Path
) -> None:
    openssl = require_binary("openssl")
    ctx = server_context(alice_creds.certificate_pem, alice_creds.private_key_pem)
    async with tls_server(ctx) as (port, _):
        process = await asyncio.create_subprocess_exec(
            openssl,
            "s_client",
            "-connect",
            f"{HOST}:{port}",
            "-tls1_3",
            "-showcerts",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(b"ping\n"), TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = output.decode(errors="replace")
    assert "TLSv1.3" in text, text
    assert "peer signature type: ed25519" in text.lower(), text
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    seen = certificate_der(text[start:end])
    assert seen == alice_creds.certificate_der
    assert verify_tls_binding(seen, alice.public_key_bytes, _now())


@pytest.mark.parametrize("kind", ["identity", "ed25519", "ecdsa-p256"])
def test_openssl_verify_accepts_our_certificates_strictly(
    kind: str, alice: Identity, tmp_path: Path
) -> None:
    openssl = require_binary("openssl")
    if kind == "identity":
        pem = alice.certificate_pem("alice", _now(), days=1, aors=["sip:alice@p2p.example"])
    else:
        pem = alice.tls_certificate("alice", _now(), days=1, key_type=kind).certificate_pem  # type: ignore[arg-type]
    path = tmp_path / "cert.pem"
    path.write_bytes(pem)
    strict = ["-x509_strict", "-check_ss_sig"]
    for purpose in ("sslserver", "sslclient"):
        result = subprocess.run(
            [openssl, "verify", *strict, "-purpose", purpose, "-CAfile", str(path), str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_a_key_written_by_openssl_loads(tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    path = tmp_path / "openssl.pem"
    subprocess.run(
        [openssl, "genpkey", "-algorithm", "ed25519", "-out", str(path)],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    path.chmod(0o600)
    identity = Identity.load(path)
    public = subprocess.run(
        [openssl, "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    ).stdout
    assert public[-32:] == identity.public_key_bytes  # SPKI ends with the raw key
    assert identity.private_key_pem() == path.read_bytes()


# -- the node's import path does not load cryptography ---------------------------------------------

_NO_CRYPTOGRAPHY = textwrap.dedent(
    """
    import datetime, os, sys, tempfile
    import p2psip.overlay.identity, p2psip.endpoint.aio.tls, p2psip.node
    assert "cryptography" not in sys.modules, "import"
    from p2psip.endpoint.aio.tls import certificate_der, server_context
    from p2psip.overlay.identity import Identity, verify_tls_binding
    identity = Identity.generate()
    signature = identity.sign(b"record")
    assert Identity.verify(identity.public_key_bytes, b"record", signature)
    now = datetime.datetime.now(datetime.UTC)
    creds = identity.tls_certificate("node", now, aors=["sip:a@p2p.example"])
    server_context(creds.certificate_pem, creds.private_key_pem)
    cert = certificate_der(creds.certificate_pem)
    assert verify_tls_binding(cert, identity.public_key_bytes, now)
    identity.certificate_pem("node", now)
    with tempfile.TemporaryDirectory() as tmp:
        identity.save(os.path.join(tmp, "id.pem"))
        assert Identity.load(os.path.join(tmp, "id.pem")) == identity
        assert Identity.load_or_create(os.path.join(tmp, "id.pem")) == identity
    assert "cryptography" not in sys.modules, "use"
    identity.tls_certificate("node", now, key_type="ecdsa-p256")
    assert "cryptography" in sys.modules, "the ECDSA path does use it"
    print("ok")
    """
)


def test_the_node_path_never_imports_cryptography() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", _NO_CRYPTOGRAPHY],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
