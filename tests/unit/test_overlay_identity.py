"""Ed25519 identities: signatures, fingerprints, key files, certificates and TLS bindings."""

from __future__ import annotations

import datetime
import os
import pickle
import random
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from p2psip.errors import IdentityError, InsecureKeyFileError, P2PSIPError
from p2psip.overlay import identity as identity_module
from p2psip.overlay.identity import (
    TLS_BINDING_OID,
    Identity,
    fingerprint_of,
    short_fingerprint_of,
    verify_tls_binding,
)

NOW = datetime.datetime(2024, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
AOR = "sip:alice@p2p.example"


def seeded(n: int) -> Identity:
    return Identity.from_private_bytes(bytes([n]) * 32)


# -- keys, fingerprints, signatures ----------------------------------------------------------------


def test_generate_with_a_seeded_rng_is_repeatable() -> None:
    first = Identity.generate(random.Random(7))
    second = Identity.generate(random.Random(7))
    other = Identity.generate(random.Random(8))
    assert first == second
    assert first.public_key_bytes == second.public_key_bytes
    assert first != other
    assert len(first.public_key_bytes) == 32


def test_generate_without_rng_gives_distinct_keys() -> None:
    assert Identity.generate() != Identity.generate()


def test_fingerprint_forms() -> None:
    alice = seeded(1)
    fp = alice.fingerprint
    assert fp.startswith("sha256:")
    assert len(fp) == len("sha256:") + 52
    assert fp == fp.lower()
    assert fp == fingerprint_of(alice.public_key_bytes)
    short = alice.short_fingerprint
    assert short == short_fingerprint_of(alice.public_key_bytes)
    assert len(short) == 19 and short.count("-") == 3
    assert short.replace("-", "") == fp[7:23]
    assert seeded(2).fingerprint != fp


def test_sign_and_verify_round_trip() -> None:
    alice = seeded(1)
    signature = alice.sign(b"hello")
    assert len(signature) == 64
    assert Identity.verify(alice.public_key_bytes, b"hello", signature)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k, d, s: (k, d + b"!", s),
        lambda k, d, s: (seeded(2).public_key_bytes, d, s),
        lambda k, d, s: (k, d, bytes([s[0] ^ 1]) + s[1:]),
        lambda k, d, s: (k, d, s[:-1]),
        lambda k, d, s: (k[:-1], d, s),
        lambda k, d, s: (b"\xff" * 32, d, s),
        lambda k, d, s: (None, d, s),
        lambda k, d, s: (k, None, s),
        lambda k, d, s: (k, d, "not bytes"),
        lambda k, d, s: (12345, d, s),
    ],
)
def test_verify_returns_false_and_never_raises(mutate) -> None:
    alice = seeded(1)
    key, data, sig = mutate(alice.public_key_bytes, b"hello", alice.sign(b"hello"))
    assert Identity.verify(key, data, sig) is False


def test_from_private_bytes_needs_32_bytes() -> None:
    with pytest.raises(IdentityError):
        Identity.from_private_bytes(b"short")
    with pytest.raises(P2PSIPError):
        Identity.from_private_bytes("x" * 32)  # type: ignore[arg-type]


def test_private_key_is_neither_shown_nor_pickled() -> None:
    alice = seeded(1)
    raw_private = bytes([1]) * 32
    assert alice.fingerprint in repr(alice)
    assert raw_private.hex() not in repr(alice)
    with pytest.raises(TypeError):
        pickle.dumps(alice)


# -- key files -------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_and_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(1).save(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Identity.load(path) == seeded(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.pem"]  # no temp file left


def test_save_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        seeded(1).save(tmp_path / "id.pem")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "id.pem") == 0o600


def test_save_creates_the_temp_file_exclusively_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int | None]] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(identity_module.os, "open", spy)
    seeded(1).save(tmp_path / "id.pem")
    created = [c for c in calls if c[1] & os.O_CREAT]
    assert len(created) == 1
    path, flags, mode = created[0]
    assert path != os.fspath(tmp_path / "id.pem")  # written elsewhere, then moved into place
    assert flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert mode == 0o600


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(1).save(path)
    with pytest.raises(IdentityError, match="already exists"):
        seeded(2).save(path)
    assert Identity.load(path) == seeded(1)
    seeded(2).save(path, overwrite=True)
    assert Identity.load(path) == seeded(2)
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.pem"]


def test_loading_a_group_or_world_readable_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(1).save(path)
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(InsecureKeyFileError, match="chmod 600"):
            Identity.load(path)
    assert Identity.load(path, allow_insecure=True) == seeded(1)


def test_load_of_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Identity.load(tmp_path / "missing.pem")


def test_encrypted_key_file(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(1).save(path, passphrase="correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert Identity.load(path, passphrase="correct horse") == seeded(1)
    assert Identity.load(path, passphrase=b"correct horse") == seeded(1)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        Identity.load(path, passphrase="battery staple")
    with pytest.raises(IdentityError, match="passphrase is required"):
        Identity.load(path)


def test_passphrase_for_an_unencrypted_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(1).save(path)
    with pytest.raises(IdentityError, match="not encrypted"):
        Identity.load(path, passphrase="x")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        seeded(1).save(tmp_path / "id.pem", passphrase="")
    assert list(tmp_path.iterdir()) == []


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    _write_private(path, b"hello, I am not a key\n")
    with pytest.raises(IdentityError, match="not a PEM private key"):
        Identity.load(path)


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with pytest.raises(IdentityError, match="not Ed25519"):
        Identity.load(path)


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        Identity.load(tmp_path)


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    created = Identity.load_or_create(path, rng=random.Random(3))
    assert created == Identity.generate(random.Random(3))
    assert _mode(path) == 0o600
    assert Identity.load_or_create(path, rng=random.Random(4)) == created


def test_load_or_create_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    created = Identity.load_or_create(path, passphrase="pw")
    assert Identity.load_or_create(path, passphrase="pw") == created
    with pytest.raises(IdentityError):
        Identity.load_or_create(path, passphrase="wrong")


# -- certificates ----------------------------------------------------------------------------------


def test_ed25519_certificate_over_the_identity_key() -> None:
    alice = seeded(1)
    pem = alice.certificate_pem("Alice", NOW, days=10, aors=[AOR, "sip:al@p2p.example"])
    cert = x509.load_pem_x509_certificate(pem)
    key = cert.public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == alice.public_key_bytes
    cert.verify_directly_issued_by(cert)  # self-signed with the same key
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "Alice"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        AOR,
        "sip:al@p2p.example",
    ]
    assert cert.not_valid_before_utc <= NOW
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=10)
    assert verify_tls_binding(cert.public_bytes(serialization.Encoding.DER), alice.public_key_bytes)
    assert not verify_tls_binding(
        cert.public_bytes(serialization.Encoding.DER), seeded(2).public_key_bytes
    )


def test_certificate_accepts_a_naive_utc_now() -> None:
    pem = seeded(1).certificate_pem("Alice", NOW.replace(tzinfo=None), days=1)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=1)


def test_certificate_serial_is_repeatable_with_a_seeded_rng() -> None:
    first = seeded(1).certificate_pem("A", NOW, rng=random.Random(1))
    second = seeded(1).certificate_pem("A", NOW, rng=random.Random(1))
    assert first == second  # Ed25519 signatures are deterministic (RFC 8032 §5.1.6)


def test_tls_certificate_is_ecdsa_and_bound_to_the_identity() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, aors=[AOR], rng=random.Random(5))
    cert = x509.load_pem_x509_certificate(creds.certificate_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)
    private = serialization.load_pem_private_key(creds.private_key_pem, password=None)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()
    assert "private_key_pem" not in repr(creds)
    extension = cert.extensions.get_extension_for_oid(TLS_BINDING_OID)
    assert not extension.critical
    assert verify_tls_binding(creds.certificate_der, alice.public_key_bytes)
    assert verify_tls_binding(creds.certificate_pem, alice.public_key_bytes)
    assert verify_tls_binding(creds.certificate_der, alice.public_key_bytes, now=NOW)


def test_tls_binding_to_another_key_is_refused() -> None:
    creds = seeded(1).tls_certificate("Alice", NOW, rng=random.Random(5))
    assert not verify_tls_binding(creds.certificate_der, seeded(2).public_key_bytes)


def test_tls_binding_outside_validity_is_refused_when_now_is_given() -> None:
    creds = seeded(1).tls_certificate("Alice", NOW, days=30, rng=random.Random(5))
    key = seeded(1).public_key_bytes
    assert not verify_tls_binding(creds.certificate_der, key, now=NOW + datetime.timedelta(31))
    assert not verify_tls_binding(creds.certificate_der, key, now=NOW - datetime.timedelta(1))


def _reissue_with(extension_value: bytes, days: int = 30) -> bytes:
    """A fresh EC certificate carrying a binding extension copied from elsewhere."""
    key = ec.derive_private_key(12345, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Mallory")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.UnrecognizedExtension(TLS_BINDING_OID, extension_value), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_binding_copied_onto_another_tls_key_is_refused() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, rng=random.Random(5))
    cert = x509.load_der_x509_certificate(creds.certificate_der)
    stolen = cert.extensions.get_extension_for_oid(TLS_BINDING_OID).value.value
    assert not verify_tls_binding(_reissue_with(stolen), alice.public_key_bytes)


def test_a_binding_with_a_mangled_extension_is_refused() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, rng=random.Random(5))
    cert = x509.load_der_x509_certificate(creds.certificate_der)
    value = cert.extensions.get_extension_for_oid(TLS_BINDING_OID).value.value
    for broken in (b"", value[:-1], b"\x31" + value[1:], value + b"\x00"):
        assert not verify_tls_binding(_reissue_with(broken), alice.public_key_bytes)


def test_a_tls_certificate_without_binding_is_refused() -> None:
    key = ec.derive_private_key(99, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert not verify_tls_binding(der, seeded(1).public_key_bytes)


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", b"-----BEGIN junk", b"x" * 500])
def test_verify_tls_binding_never_raises_on_garbage(garbage: bytes) -> None:
    assert verify_tls_binding(garbage, seeded(1).public_key_bytes) is False


def test_verify_tls_binding_needs_a_32_byte_key() -> None:
    creds = seeded(1).tls_certificate("Alice", NOW, rng=random.Random(5))
    assert verify_tls_binding(creds.certificate_der, b"short") is False
    assert verify_tls_binding(creds.certificate_der, None) is False  # type: ignore[arg-type]
