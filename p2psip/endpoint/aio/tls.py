"""TLS helpers for the SIP transports: self-signed certificates and SSL contexts.

Contexts come from the standard :mod:`ssl` module. :func:`make_self_signed` makes certificates with
``cryptography``, imported only when it is called: the node itself gets its certificates from
:meth:`p2psip.overlay.identity.Identity.tls_certificate`, which does not need it. The default
certificate key of :func:`make_self_signed` is ECDSA P-256, which every TLS stack accepts; an
Ed25519 key can be passed (OpenSSL 3 negotiates it in TLS 1.3, but not every peer does).

Python's :mod:`ssl` has no verification callback, so a server can verify client certificates only
against given CAs (``client_cadata``); pinning the key of an unknown self-signed peer is done after
the handshake with :meth:`TransportManager.peer_certificate`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeAlias

from p2psip.overlay import der

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

__all__ = ["certificate_der", "client_context", "make_self_signed", "server_context"]

#: The private keys :func:`make_self_signed` accepts (``cryptography`` types, named lazily).
CertificateKey: TypeAlias = (
    "ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey"
)


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_self_signed(
    common_name: str,
    key: CertificateKey | None = None,
    *,
    alt_names: Iterable[str] = (),
    days: int = 365,
) -> tuple[bytes, bytes]:
    """Make a self-signed certificate.

    Args:
        common_name: the subject CN; also the first subjectAltName (an IP address literal
            becomes an iPAddress entry, anything else a dNSName).
        key: the private key to certify; a new ECDSA P-256 key when None. Ed25519 and Ed448
            keys are accepted (signed without a separate hash).
        alt_names: further subjectAltName entries (host names or IP address literals), e.g.
            ``["127.0.0.1", "::1"]`` so that a client can verify a loopback address.
        days: validity period, starting one hour ago to tolerate clock skew.

    Returns:
        ``(cert_pem, key_pem)``; the key is unencrypted PKCS#8.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
    from cryptography.x509.oid import NameOID

    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for entry in (common_name, *alt_names):
        general = _general_name(entry)
        if general not in sans:
            sans.append(general)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # An end-entity certificate that peers trust directly (it is its own trust anchor).
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    pure_signature = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    algorithm = None if pure_signature else hashes.SHA256()
    cert = builder.sign(key, algorithm)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def certificate_der(cert_pem: bytes | str) -> bytes:
    """The DER form of a PEM certificate (what :meth:`peer_certificate` returns).

    Raises:
        DERError: no PEM ``CERTIFICATE`` block in ``cert_pem`` (the first one is taken).
    """
    return der.pem_decode(cert_pem, "CERTIFICATE")


@contextlib.contextmanager
def _pem_files(cert_pem: bytes | str, key_pem: bytes | str) -> Iterator[tuple[str, str]]:
    """Paths holding the PEM texts, as ``SSLContext.load_cert_chain`` only reads files.

    On Linux an anonymous memory file is used (the key never touches a disk); elsewhere a
    private temporary directory that is removed straight after loading.
    """
    blobs = [x.encode() if isinstance(x, str) else x for x in (cert_pem, key_pem)]
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fds = [memfd_create("p2psip-tls", 0) for _ in blobs]
        try:
            for fd, blob in zip(fds, blobs, strict=True):
                os.write(fd, blob)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile  # only where memfd_create is missing (it pulls shutil, bz2, lzma in)

    with tempfile.TemporaryDirectory(prefix="p2psip-tls-") as tmp:
        paths = [os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")]
        for path, blob in zip(paths, blobs, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
        yield paths[0], paths[1]


def _cadata_text(cadata: bytes | str) -> str | bytes:
    """``load_verify_locations`` takes PEM as str and DER as bytes; accept PEM bytes too."""
    if isinstance(cadata, bytes) and cadata.lstrip().startswith(b"-----BEGIN"):
        return cadata.decode("ascii")
    return cadata


def server_context(
    cert_pem: bytes | str,
    key_pem: bytes | str,
    *,
    client_cafile: str | None = None,
    client_cadata: bytes | str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """An SSL context for a TLS listener (TLS 1.2 or later).

    Args:
        cert_pem: the server certificate (chain) in PEM.
        key_pem: its private key in PEM.
        client_cafile: CA file to verify client certificates against (mutual TLS).
        client_cadata: CA certificates (PEM text or DER) to verify client certificates against.
        require_client_cert: refuse clients without a certificate (only with a client CA);
            otherwise a certificate is requested and verified when one is sent.

    Returns:
        The server context.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with _pem_files(cert_pem, key_pem) as (cert_path, key_path):
        ctx.load_cert_chain(cert_path, key_path)
    if client_cafile is not None or client_cadata is not None:
        ctx.load_verify_locations(
            cafile=client_cafile,
            cadata=_cadata_text(client_cadata) if client_cadata is not None else None,
        )
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("require_client_cert needs client_cafile or client_cadata")
    return ctx


def client_context(
    verify: bool = True,
    *,
    cafile: str | None = None,
    cadata: bytes | str | None = None,
    check_hostname: bool | None = None,
    cert_pem: bytes | str | None = None,
    key_pem: bytes | str | None = None,
) -> ssl.SSLContext:
    """An SSL context for outgoing TLS connections (TLS 1.2 or later).

    Args:
        verify: verify the server certificate. False accepts any certificate (tests, legacy
            peers, or peers whose key is pinned after the handshake).
        cafile: CA file to verify against instead of the system store.
        cadata: CA certificates (PEM text or bytes, or DER) to verify against instead of the
            system store; a self-signed peer certificate is its own CA.
        check_hostname: match the server name (host name or IP address) against the
            certificate; defaults to ``verify``.
        cert_pem: a client certificate to present (mutual TLS).
        key_pem: its private key.

    Returns:
        The client context.
    """
    if check_hostname is None:
        check_hostname = verify
    if check_hostname and not verify:
        raise ValueError("check_hostname requires verify")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if cafile is None and cadata is None:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.load_verify_locations(
                cafile=cafile, cadata=_cadata_text(cadata) if cadata is not None else None
            )
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert_pem is not None:
        if key_pem is None:
            raise ValueError("cert_pem needs key_pem")
        with _pem_files(cert_pem, key_pem) as (cert_path, key_path):
            ctx.load_cert_chain(cert_path, key_path)
    return ctx
