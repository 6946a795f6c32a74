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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psip.errors import IdentityError, InsecureKeyFileError, P2PSIPError
from p2psip.overlay import der
from p2psip.overlay import identity as identity_module
from p2psip.overlay.der import DERError
from p2psip.overlay.identity import (
    TLS_BINDING_OID,
    Identity,
    fingerprint_of,
    short_fingerprint_of,
    verify_tls_binding,
)

BINDING_OID = x509.ObjectIdentifier(TLS_BINDING_OID)
FAST = settings(
    deadline=datetime.timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
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


@pytest.mark.parametrize(
    "form", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
)
def test_a_key_that_is_not_ed25519_is_refused(
    tmp_path: Path, form: serialization.PrivateFormat
) -> None:
    path = tmp_path / "ec.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    _write_private(path, pem)
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
    creds = alice.tls_certificate(
        "Alice", NOW, days=30, aors=[AOR], rng=random.Random(5), key_type="ecdsa-p256"
    )
    cert = x509.load_pem_x509_certificate(creds.certificate_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    cert.verify_directly_issued_by(cert)
    private = serialization.load_pem_private_key(creds.private_key_pem, password=None)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()
    assert "private_key_pem" not in repr(creds)
    extension = cert.extensions.get_extension_for_oid(BINDING_OID)
    assert not extension.critical
    assert verify_tls_binding(creds.certificate_der, alice.public_key_bytes)
    assert verify_tls_binding(creds.certificate_pem, alice.public_key_bytes)
    assert verify_tls_binding(creds.certificate_der, alice.public_key_bytes, now=NOW)


def test_tls_certificate_default_is_a_fresh_ed25519_key_bound_to_the_identity() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, aors=[AOR])
    cert = x509.load_pem_x509_certificate(creds.certificate_pem)
    key = cert.public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    assert key.public_bytes_raw() != alice.public_key_bytes  # a TLS key, not the identity key
    cert.verify_directly_issued_by(cert)
    private = serialization.load_pem_private_key(creds.private_key_pem, password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert private.public_key().public_bytes_raw() == key.public_bytes_raw()
    assert b"-----BEGIN PRIVATE KEY-----" in creds.private_key_pem
    assert not cert.extensions.get_extension_for_oid(BINDING_OID).critical
    assert verify_tls_binding(creds.certificate_der, alice.public_key_bytes)
    assert verify_tls_binding(creds.certificate_pem, alice.public_key_bytes, now=NOW)
    # every call makes a new TLS key
    again = alice.tls_certificate("Alice", NOW, days=30, aors=[AOR])
    assert again.private_key_pem != creds.private_key_pem


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
        .add_extension(x509.UnrecognizedExtension(BINDING_OID, extension_value), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_binding_copied_onto_another_tls_key_is_refused() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, rng=random.Random(5))
    cert = x509.load_der_x509_certificate(creds.certificate_der)
    stolen = cert.extensions.get_extension_for_oid(BINDING_OID).value.value
    assert not verify_tls_binding(_reissue_with(stolen), alice.public_key_bytes)


def test_a_binding_with_a_mangled_extension_is_refused() -> None:
    alice = seeded(1)
    creds = alice.tls_certificate("Alice", NOW, days=30, rng=random.Random(5))
    cert = x509.load_der_x509_certificate(creds.certificate_der)
    value = cert.extensions.get_extension_for_oid(BINDING_OID).value.value
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


def test_tls_binding_constants_keep_their_values() -> None:
    assert TLS_BINDING_OID == "2.25.233065262399196248211660220002685419634"
    assert identity_module.TLS_BINDING_PREFIX == b"p2psip-tls-binding-v1\x00"


# -- RFC 8032 §7.1 test vectors (TEST 1, 2, 3: SECRET KEY, PUBLIC KEY, MESSAGE, SIGNATURE) ---------

RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    identity = Identity.from_private_bytes(bytes.fromhex(secret))
    assert identity.public_key_bytes.hex() == public
    assert identity.sign(bytes.fromhex(message)).hex() == signature
    assert Identity.verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))
    assert not Identity.verify(
        bytes.fromhex(public), bytes.fromhex(message) + b"x", bytes.fromhex(signature)
    )


@settings(FAST, max_examples=50)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200))
def test_signatures_are_those_of_the_cryptography_backend(seed: bytes, message: bytes) -> None:
    ours = Identity.from_private_bytes(seed)
    theirs = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert ours.public_key_bytes == theirs.public_key().public_bytes_raw()
    assert ours.sign(message) == theirs.sign(message)  # deterministic (RFC 8032 §5.1.6)


@settings(FAST, max_examples=100)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=64), st.binary(max_size=64))
def test_verify_agrees_with_cryptography_on_forged_signatures(
    key: bytes, message: bytes, signature_part: bytes
) -> None:
    signature = (signature_part * 64)[:64] if signature_part else bytes(64)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        theirs = True
    except (InvalidSignature, ValueError):
        theirs = False
    ours = Identity.verify(key, message, signature)
    # libsodium is the stricter one: it also refuses small-order keys and R (see below)
    assert not ours or theirs


def test_small_order_keys_are_refused_unlike_openssl() -> None:
    # All-zero key and signature: A and R are points of small order and S = 0, so the check
    # [S]B = R + [k]A holds whenever k = H(R || A || M) is a suitable multiple (a share of all
    # messages, b"\0\0\0" among them). OpenSSL accepts such a forgery; libsodium refuses
    # small-order points, which is what an identity check wants.
    zeros_key, zeros_signature, message = bytes(32), bytes(64), b"\x00\x00\x00"
    ed25519.Ed25519PublicKey.from_public_bytes(zeros_key).verify(zeros_signature, message)
    assert not Identity.verify(zeros_key, message, zeros_signature)


def test_identity_wraps_a_cryptography_key_too() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
    assert Identity(key) == seeded(1)
    with pytest.raises(IdentityError):
        Identity(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        Identity(b"short")


def test_sign_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        seeded(1).sign("text")  # type: ignore[arg-type]
    assert seeded(1).sign(bytearray(b"abc")) == seeded(1).sign(b"abc")
    assert seeded(1).sign(memoryview(b"abc")) == seeded(1).sign(b"abc")


def test_slots_and_no_private_key_in_attributes() -> None:
    alice = seeded(1)
    assert not hasattr(alice, "__dict__")
    with pytest.raises(AttributeError):
        alice.extra = 1  # type: ignore[attr-defined]


# -- key files: our PKCS#8 against cryptography's -------------------------------------------------


def _cryptography_pem(seed: bytes, passphrase: bytes | None = None) -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    encryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_unencrypted_key_file_is_byte_identical_to_cryptography() -> None:
    for n in (1, 2, 200):
        seed = bytes([n]) * 32
        assert seeded(n).private_key_pem() == _cryptography_pem(seed)


def test_key_files_written_by_cryptography_load(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pem"
    _write_private(plain, _cryptography_pem(bytes([7]) * 32))
    assert Identity.load(plain) == seeded(7)
    encrypted = tmp_path / "encrypted.pem"
    _write_private(encrypted, _cryptography_pem(bytes([8]) * 32, b"pw"))
    assert Identity.load(encrypted, passphrase="pw") == seeded(8)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        Identity.load(encrypted, passphrase="nope")


def test_our_encrypted_files_load_with_cryptography(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    seeded(3).save(path, passphrase="secret")
    key = serialization.load_pem_private_key(path.read_bytes(), password=b"secret")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert key.private_bytes_raw() == bytes([3]) * 32


def _one_asymmetric_key(
    version: int,
    seed: bytes,
    *,
    public_key: bytes | None = None,
    attributes: bool = False,
    algorithm: bytes | None = None,
) -> bytes:
    """RFC 5958 §2 OneAsymmetricKey built by hand (v2 may carry the public key)."""
    parts = [
        der.integer(version),
        algorithm if algorithm is not None else der.sequence(der.oid("1.3.101.112")),
        der.octet_string(der.octet_string(seed)),
    ]
    if attributes:  # RFC 8410 §10.3 example style: a friendlyName-like attribute
        attribute = der.sequence(
            der.oid("1.2.840.113549.1.9.9.20"), der.set_of(der.tlv(der.UTF8_STRING, b"Curdle"))
        )
        parts.append(der.context(0, attribute))
    if public_key is not None:
        parts.append(der.bit_string(public_key, tag=0x81))
    return der.pem_encode("PRIVATE KEY", der.sequence(*parts))


def test_v2_key_files_with_the_public_key_load(tmp_path: Path) -> None:
    seed = bytes([4]) * 32
    path = tmp_path / "v2.pem"
    _write_private(path, _one_asymmetric_key(1, seed, public_key=seeded(4).public_key_bytes))
    assert Identity.load(path) == seeded(4)
    with_attributes = tmp_path / "v2a.pem"
    _write_private(
        with_attributes,
        _one_asymmetric_key(1, seed, public_key=seeded(4).public_key_bytes, attributes=True),
    )
    assert Identity.load(with_attributes) == seeded(4)
    without = tmp_path / "v2b.pem"
    _write_private(without, _one_asymmetric_key(1, seed))
    assert Identity.load(without) == seeded(4)


# RFC 8410 §10.3: "An example of the same encoding with the public key and an attribute" (v2).
RFC8410_V2_EXAMPLE = b"""-----BEGIN PRIVATE KEY-----
MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB
Z9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PRIVATE KEY-----
"""


def test_rfc8410_v2_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "rfc8410.pem"
    _write_private(path, RFC8410_V2_EXAMPLE)
    identity = Identity.load(path)
    seed = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
    assert identity == Identity.from_private_bytes(bytes.fromhex(seed))
    assert identity.public_key_bytes.hex() == (
        "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
    )


def test_a_v2_key_file_whose_public_key_does_not_match_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.pem"
    _write_private(
        path, _one_asymmetric_key(1, bytes([4]) * 32, public_key=seeded(5).public_key_bytes)
    )
    with pytest.raises(IdentityError, match="does not match"):
        Identity.load(path)


@pytest.mark.parametrize(
    "pem",
    [
        _one_asymmetric_key(0, bytes(32), public_key=bytes(32)),  # v1 has no public key
        _one_asymmetric_key(2, bytes(32)),  # unknown version
        _one_asymmetric_key(0, bytes(31)),  # short seed
        _one_asymmetric_key(
            0, bytes(32), algorithm=der.sequence(der.oid("1.3.101.112"), der.tlv(der.NULL, b""))
        ),  # RFC 8410 §3: parameters absent
        der.pem_encode("PRIVATE KEY", b"\x30\x03\x02\x01\x00"),
        der.pem_encode("PRIVATE KEY", b"\x30\x00garbage"),
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n",  # unfinished
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
)
def test_malformed_key_files_are_refused(tmp_path: Path, pem: bytes) -> None:
    path = tmp_path / "bad.pem"
    _write_private(path, pem)
    with pytest.raises(IdentityError, match="not a PEM private key"):
        Identity.load(path)


def test_a_key_file_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.pem"
    _write_private(path, seeded(1).private_key_pem() + b"#" * (64 * 1024))
    with pytest.raises(IdentityError, match="too large"):
        Identity.load(path)


def test_load_or_create_race_uses_the_other_process_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "id.pem"
    real_save = Identity.save

    def save_after_someone_else(self, target, passphrase=None, *, overwrite=False):
        real_save(seeded(9), target)  # the other process wins the race
        return real_save(self, target, passphrase, overwrite=overwrite)

    monkeypatch.setattr(Identity, "save", save_after_someone_else)
    assert Identity.load_or_create(path, rng=random.Random(1)) == seeded(9)


# -- certificates: content checked with cryptography (test-only) ----------------------------------


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension:
    return cert.extensions.get_extension_for_oid(oid)


@pytest.mark.parametrize("kind", ["identity", "ed25519", "ecdsa-p256"])
def test_certificate_fields_follow_rfc5280(kind: str) -> None:
    alice = seeded(1)
    if kind == "identity":
        pem = alice.certificate_pem("Alice Ünicode", NOW, days=10, aors=[AOR])
    else:
        pem = alice.tls_certificate(
            "Alice Ünicode", NOW, days=10, aors=[AOR], key_type=kind
        ).certificate_pem
    cert = x509.load_pem_x509_certificate(pem)
    raw = cert.public_bytes(serialization.Encoding.DER)
    assert cert.version == x509.Version.v3
    assert 0 < cert.serial_number < 2**159  # positive, at most 20 octets (RFC 5280 §4.1.2.2)
    if kind == "ecdsa-p256":
        assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    else:
        assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ED25519
        assert cert.signature_algorithm_parameters is None
        assert raw.count(bytes.fromhex("300506032b6570")) >= 2  # parameters absent, RFC 8410 §3
    cert.verify_directly_issued_by(cert)
    assert cert.issuer == cert.subject
    (cn,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert cn.value == "Alice Ünicode"
    utf8 = "Alice Ünicode".encode()
    assert b"\x0c" + bytes([len(utf8)]) + utf8 in raw  # UTF8String
    assert cert.not_valid_before_utc == NOW - identity_module.CERTIFICATE_BACKDATE
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=10)
    assert b"\x17\x0d240301115500Z" in raw and b"\x17\x0d240311120000Z" in raw  # UTCTime
    basic = _ext(cert, x509.ExtensionOID.BASIC_CONSTRAINTS)
    assert basic.critical and basic.value.ca is False and basic.value.path_length is None
    eku = _ext(cert, x509.ExtensionOID.EXTENDED_KEY_USAGE)
    assert not eku.critical
    assert list(eku.value) == [
        x509.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    san = _ext(cert, x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [AOR]
    names = [e.oid for e in cert.extensions]
    expected = [
        x509.ExtensionOID.BASIC_CONSTRAINTS,
        x509.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ]
    assert names == expected + ([] if kind == "identity" else [BINDING_OID])


def test_validity_uses_generalized_time_from_2050() -> None:
    late = datetime.datetime(2049, 12, 31, 12, tzinfo=datetime.UTC)
    creds = seeded(1).tls_certificate("Alice", late, days=2)
    cert = x509.load_pem_x509_certificate(creds.certificate_pem)
    raw = cert.public_bytes(serialization.Encoding.DER)
    assert b"\x17\x0d491231115500Z" in raw  # notBefore: UTCTime through 2049
    assert b"\x18\x0f20500102120000Z" in raw  # notAfter: GeneralizedTime (RFC 5280 §4.1.2.5)
    assert cert.not_valid_after_utc == late + datetime.timedelta(days=2)
    key = seeded(1).public_key_bytes
    assert verify_tls_binding(creds.certificate_der, key, now=late + datetime.timedelta(days=1))
    assert not verify_tls_binding(creds.certificate_der, key, now=late + datetime.timedelta(3))


def test_certificates_without_aors_have_no_subject_alt_name() -> None:
    cert = x509.load_pem_x509_certificate(seeded(1).tls_certificate("A", NOW).certificate_pem)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_tls_certificate_is_repeatable_with_a_seeded_rng() -> None:
    first = seeded(1).tls_certificate("A", NOW, rng=random.Random(1))
    second = seeded(1).tls_certificate("A", NOW, rng=random.Random(1))
    third = seeded(1).tls_certificate("A", NOW, rng=random.Random(2))
    assert first == second
    assert first.private_key_pem != third.private_key_pem


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_type": "rsa"}, "key type"),
        ({"days": 0}, "at least one day"),
        ({"days": 10**7}, "9999"),
        ({"common_name": ""}, "common name"),
        ({"common_name": "x" * 65}, "common name"),
        ({"aors": ["sip:älice@example.com"]}, "ASCII"),
        ({"aors": [""]}, "ASCII"),
    ],
)
def test_certificate_arguments_are_checked(kwargs: dict, message: str) -> None:
    arguments = {"common_name": "Alice", "now": NOW, **kwargs}
    with pytest.raises(IdentityError, match=message):
        seeded(1).tls_certificate(**arguments)


def _cryptography_binding_check(
    cert_der: bytes, key: bytes, now: datetime.datetime | None = None
) -> bool:
    """The documented rule, checked independently with cryptography."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        if now is not None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
        public_key = cert.public_key()
        if (
            isinstance(public_key, ed25519.Ed25519PublicKey)
            and public_key.public_bytes_raw() == key
        ):
            return True
        value = cert.extensions.get_extension_for_oid(BINDING_OID).value.value
        if value[:4] != b"\x30\x64\x04\x20" or value[36:38] != b"\x04\x40" or len(value) != 102:
            return False
        if value[4:36] != key:
            return False
        spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        payload = (
            b"p2psip-tls-binding-v1\x00"
            + spki
            + int(cert.not_valid_after_utc.timestamp()).to_bytes(8, "big")
        )
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(value[38:], payload)
        return True
    except (ValueError, InvalidSignature, x509.ExtensionNotFound):
        return False


def _reissue_ed25519_with(extension_value: bytes) -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([42]) * 32)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Mallory")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.UnrecognizedExtension(BINDING_OID, extension_value), False)
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _corpus() -> list[bytes]:
    alice = seeded(1)
    ed = alice.tls_certificate("Alice", NOW, days=30, aors=[AOR], rng=random.Random(5))
    ecdsa = alice.tls_certificate(
        "Alice", NOW, days=30, rng=random.Random(5), key_type="ecdsa-p256"
    )
    own = x509.load_pem_x509_certificate(alice.certificate_pem("Alice", NOW, days=30))
    stolen = (
        x509.load_der_x509_certificate(ed.certificate_der)
        .extensions.get_extension_for_oid(BINDING_OID)
        .value.value
    )
    return [
        ed.certificate_der,
        ecdsa.certificate_der,
        own.public_bytes(serialization.Encoding.DER),
        seeded(2).tls_certificate("Bob", NOW, rng=random.Random(6)).certificate_der,
        _reissue_with(stolen),
        _reissue_ed25519_with(stolen),
        _reissue_with(b"\x30\x00"),
    ]


def test_verify_tls_binding_agrees_with_an_independent_check() -> None:
    keys = [seeded(1).public_key_bytes, seeded(2).public_key_bytes, bytes([42]) * 32]
    moments = [None, NOW, NOW + datetime.timedelta(days=29), NOW + datetime.timedelta(days=31)]
    outcomes = set()
    for cert in _corpus():
        for key in keys:
            for now in moments:
                expected = _cryptography_binding_check(cert, key, now)
                assert verify_tls_binding(cert, key, now) is expected, (cert.hex(), key, now)
                outcomes.add(expected)
    assert outcomes == {True, False}


def test_the_binding_signs_the_spki_and_not_after() -> None:
    alice = seeded(1)
    for key_type in ("ed25519", "ecdsa-p256"):
        creds = alice.tls_certificate("Alice", NOW, days=3, key_type=key_type)
        cert = x509.load_pem_x509_certificate(creds.certificate_pem)
        value = _ext(cert, BINDING_OID).value.value
        assert value[4:36] == alice.public_key_bytes
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        not_after = int((NOW + datetime.timedelta(days=3)).timestamp())
        payload = b"p2psip-tls-binding-v1\x00" + spki + not_after.to_bytes(8, "big")
        ed25519.Ed25519PublicKey.from_public_bytes(alice.public_key_bytes).verify(
            value[38:], payload
        )


def test_an_ed25519_certificate_of_another_key_needs_the_binding() -> None:
    # (a) only holds for the identity key itself; a foreign Ed25519 key without binding fails
    foreign = seeded(3).certificate_pem("Carol", NOW)
    assert not verify_tls_binding(foreign, seeded(1).public_key_bytes)
    assert verify_tls_binding(foreign, seeded(3).public_key_bytes)


def test_verify_tls_binding_refuses_wrong_argument_types() -> None:
    creds = seeded(1).tls_certificate("Alice", NOW)
    key = seeded(1).public_key_bytes
    assert verify_tls_binding(creds.certificate_pem.decode(), key) is False  # type: ignore[arg-type]
    assert verify_tls_binding(None, key) is False  # type: ignore[arg-type]
    assert verify_tls_binding(creds.certificate_der, key, now="yesterday") is False  # type: ignore[arg-type]
    assert verify_tls_binding(bytearray(creds.certificate_der), bytearray(key)) is True


def test_strict_der_refusals_of_otherwise_valid_certificates() -> None:
    der_bytes = seeded(1).tls_certificate("Alice", NOW).certificate_der
    key = seeded(1).public_key_bytes
    assert verify_tls_binding(der_bytes, key)
    assert not verify_tls_binding(der_bytes + b"\x00", key)  # trailing bytes
    # the same certificate with a long-form length where the short form fits
    top = der.decode(der_bytes)
    tbs, algorithm, signature = top.children()
    padded = b"\x30\x81" + bytes([len(algorithm.content)]) + algorithm.content
    assert not verify_tls_binding(der.sequence(tbs.encoded, padded, signature.encoded), key)
    # an indefinite-length outer SEQUENCE (BER, not DER)
    indefinite = b"\x30\x80" + top.content + b"\x00\x00"
    assert not verify_tls_binding(indefinite, key)


# -- hostile certificates --------------------------------------------------------------------------

_VALID = [
    seeded(1).tls_certificate("Alice", NOW, aors=[AOR], rng=random.Random(5)).certificate_der,
    seeded(1)
    .tls_certificate("Alice", NOW, rng=random.Random(5), key_type="ecdsa-p256")
    .certificate_der,
]
_PARSED = {cert: identity_module._parse_certificate(cert) for cert in _VALID}


@settings(FAST, max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_are_never_a_binding(data: bytes) -> None:
    assert verify_tls_binding(data, seeded(1).public_key_bytes) is False


@settings(FAST, max_examples=400)
@given(
    st.sampled_from(_VALID),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from(["replace", "insert", "delete", "truncate"]),
)
def test_mutated_certificates_never_raise(
    cert: bytes, edits: list[tuple[int, int]], how: str
) -> None:
    data = bytearray(cert)
    for position, value in edits:
        at = position % len(data)
        if how == "replace":
            data[at] = value
        elif how == "insert":
            data.insert(at, value)
        elif how == "delete":
            del data[at]
        else:
            del data[at:]
        if not data:
            break
    mutated = bytes(data)
    try:
        identity_module._parse_certificate(mutated)  # the strict walker raises only DERError
    except DERError:
        pass
    result = verify_tls_binding(mutated, seeded(1).public_key_bytes)
    assert isinstance(result, bool)
    if result:  # a mutation may only survive where nothing bound or checked was touched
        ours, original = identity_module._parse_certificate(mutated), _PARSED[cert]
        assert ours.spki == original.spki
        assert ours.not_after == original.not_after
        assert ours.extensions[TLS_BINDING_OID] == original.extensions[TLS_BINDING_OID]
