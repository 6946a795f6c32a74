"""A node's or user's long-term identity: an Ed25519 key pair.

The Ed25519 key signs AoR records (see :mod:`p2psip.overlay.records`); its fingerprint is what a
user compares out of band. For SIP over TLS the same identity gives two kinds of certificate:

* :meth:`Identity.certificate_pem` - a self-signed X.509 certificate over the Ed25519 key itself.
  Ed25519 in TLS is only defined for TLS 1.3 (RFC 8446 §4.2.3, RFC 8410), so both sides must
  speak TLS 1.3.
* :meth:`Identity.tls_certificate` - a self-signed ECDSA P-256 certificate, usable by any TLS
  stack, that carries an *identity binding*: an extension in which the Ed25519 key signs the
  certificate's public key. :func:`verify_tls_binding` checks a peer's certificate against the
  Ed25519 key found in its AoR record; the TLS handshake itself proves that the peer holds the
  certificate's private key.

Key files are PEM PKCS#8 (optionally encrypted with a passphrase), written atomically with mode
0600 and refused on load when group or others may read them. Identities are never pickled.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import random
import secrets
import stat
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2psip.errors import IdentityError, InsecureKeyFileError

__all__ = [
    "TLS_BINDING_OID",
    "Identity",
    "TLSCredentials",
    "fingerprint_of",
    "short_fingerprint_of",
    "verify_tls_binding",
]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Key files larger than this are not key files.
MAX_KEY_FILE_SIZE = 64 * 1024
#: Backdating of ``notBefore``, so that a peer whose clock is a little behind accepts the cert.
CERTIFICATE_BACKDATE = datetime.timedelta(minutes=5)

#: OID of the identity-binding extension: a UUID-based OID (ITU-T X.667 / RFC 4122 §4.1 arc
#: 2.25), which needs no registration.
TLS_BINDING_OID = x509.ObjectIdentifier("2.25.233065262399196248211660220002685419634")
#: Domain separation: an identity-binding signature can never be mistaken for a record signature.
TLS_BINDING_PREFIX = b"p2psip-tls-binding-v1\x00"

# Order of the P-256 group (SEC 2 §2.4.2), to derive a seeded ECDSA key.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def fingerprint_of(public_key_bytes: bytes) -> str:
    """Return ``"sha256:" + base32(SHA-256(raw public key))``, lower case, without padding.

    Args:
        public_key_bytes: the raw 32-byte Ed25519 public key.

    Returns:
        A 59-character string such as ``"sha256:mfrgg..."``.
    """
    digest = hashlib.sha256(bytes(public_key_bytes)).digest()
    return "sha256:" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def short_fingerprint_of(public_key_bytes: bytes) -> str:
    """Return the first 80 bits of the fingerprint as four groups, e.g. ``"mfrg-gzdf-mztw-q2lk"``.

    Good enough for a human to compare by eye or read aloud; not for pinning (pin the full key).
    """
    full = fingerprint_of(public_key_bytes)[len("sha256:") :]
    return "-".join(full[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class TLSCredentials:
    """A TLS certificate and its private key, both PEM.

    Attributes:
        certificate_pem: the self-signed ECDSA P-256 certificate with the identity binding.
        private_key_pem: its private key, PKCS#8, unencrypted: keep it in memory or write it
            with the same care as the identity key.
    """

    certificate_pem: bytes
    private_key_pem: bytes = field(repr=False)

    @property
    def certificate_der(self) -> bytes:
        """The certificate in DER form (what a TLS stack returns as the peer certificate)."""
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        return cert.public_bytes(serialization.Encoding.DER)


class Identity:
    """An Ed25519 key pair: signs records, names its owner by a fingerprint.

    Build one with :meth:`generate`, :meth:`from_private_bytes`, :meth:`load` or
    :meth:`load_or_create`. The private key never appears in ``repr`` and identities refuse to
    be pickled.
    """

    __slots__ = ("_private_key", "_public_bytes")

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        """Wrap an Ed25519 private key (prefer the class methods).

        Raises:
            IdentityError: ``private_key`` is not an Ed25519 private key.
        """
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise IdentityError("an identity is an Ed25519 private key")
        self._private_key = private_key
        self._public_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> Identity:
        """Generate a new identity.

        Args:
            rng: a seeded generator for repeatable tests; ``None`` (the default, and the only
                safe choice outside tests) uses the operating system's CSPRNG.

        Returns:
            A fresh identity.
        """
        seed = secrets.token_bytes(32) if rng is None else rng.randbytes(32)
        return cls.from_private_bytes(seed)

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """Build an identity from a raw 32-byte Ed25519 private key (RFC 8032 §5.1.5).

        Raises:
            IdentityError: ``seed`` is not 32 bytes.
        """
        if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
            raise IdentityError("an Ed25519 private key is 32 bytes")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    # -- naming ---------------------------------------------------------------------------------

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032 §5.1.5)."""
        return self._public_bytes

    @property
    def fingerprint(self) -> str:
        """``"sha256:<base32>"`` of the raw public key; see :func:`fingerprint_of`."""
        return fingerprint_of(self._public_bytes)

    @property
    def short_fingerprint(self) -> str:
        """A short, human-comparable form; see :func:`short_fingerprint_of`."""
        return short_fingerprint_of(self._public_bytes)

    def __repr__(self) -> str:
        return f"<Identity {self.fingerprint}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self._public_bytes == other._public_bytes

    def __hash__(self) -> int:
        return hash(self._public_bytes)

    def __reduce__(self) -> NoReturn:
        raise TypeError("an Identity holds a private key and is never pickled; use save()")

    # -- signatures -----------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with Ed25519 (RFC 8032 §5.1.6); returns the 64-byte signature."""
        return self._private_key.sign(bytes(data))

    @staticmethod
    def verify(public_key_bytes: bytes, data: bytes, signature: bytes) -> bool:
        """Check an Ed25519 signature; never raises.

        Args:
            public_key_bytes: the signer's raw 32-byte public key.
            data: the signed bytes.
            signature: the 64-byte signature.

        Returns:
            True when the signature is valid; False on a bad signature and on any malformed
            argument (wrong length, wrong type, invalid point).
        """
        try:
            if len(public_key_bytes) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
                return False
            key = ed25519.Ed25519PublicKey.from_public_bytes(bytes(public_key_bytes))
            key.verify(bytes(signature), bytes(data))
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False
        return True

    # -- certificates ---------------------------------------------------------------------------

    def certificate_pem(
        self,
        common_name: str,
        now: datetime.datetime,
        days: int = 365,
        aors: tuple[str, ...] | list[str] = (),
        rng: random.Random | None = None,
    ) -> bytes:
        """A self-signed X.509 certificate over this Ed25519 key (RFC 8410), PEM.

        Usable for TLS 1.3 only (RFC 8446 §4.2.3): older TLS versions have no Ed25519
        signature scheme. The private key is :meth:`save`'s key file.

        Args:
            common_name: the subject CN (e.g. the user's display name or AoR).
            now: the current time (a naive datetime is taken as UTC).
            days: validity in days from ``now``.
            aors: AoRs (``sip:`` URIs) put in subjectAltName as URIs (RFC 5922 §7.1).
            rng: seeded generator for the serial number (tests); ``None`` uses the CSPRNG.

        Returns:
            The certificate in PEM form.
        """
        builder = _certificate_builder(
            common_name, self._private_key.public_key(), now, days, aors, rng
        )
        cert = builder.sign(self._private_key, algorithm=None)  # Ed25519 signs with no prehash
        return cert.public_bytes(serialization.Encoding.PEM)

    def tls_certificate(
        self,
        common_name: str,
        now: datetime.datetime,
        days: int = 30,
        aors: tuple[str, ...] | list[str] = (),
        rng: random.Random | None = None,
    ) -> TLSCredentials:
        """A fresh ECDSA P-256 TLS certificate bound to this Ed25519 identity.

        The certificate carries a non-critical extension (:data:`TLS_BINDING_OID`) holding
        ``SEQUENCE { OCTET STRING ed25519-public-key, OCTET STRING signature }`` where the
        signature is Ed25519 over::

            b"p2psip-tls-binding-v1\\x00" || DER(SubjectPublicKeyInfo) || u64be(notAfter)

        (``notAfter`` in whole seconds since the Unix epoch), so a leaked TLS key stops being
        vouched for when its certificate expires.

        Args:
            common_name: the subject CN.
            now: the current time (naive = UTC).
            days: validity in days; keep it short, the certificate is cheap to renew.
            aors: AoRs put in subjectAltName as URIs.
            rng: seeded generator for the ECDSA key and serial (tests only); ``None`` uses the
                CSPRNG.

        Returns:
            The certificate and its (unencrypted) private key, both PEM.
        """
        if rng is None:
            tls_key = ec.generate_private_key(ec.SECP256R1())
        else:
            scalar = int.from_bytes(rng.randbytes(40), "big") % (_P256_ORDER - 1) + 1
            tls_key = ec.derive_private_key(scalar, ec.SECP256R1())
        builder = _certificate_builder(common_name, tls_key.public_key(), now, days, aors, rng)
        spki = tls_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        not_after = _utc(now).replace(microsecond=0) + datetime.timedelta(days=days)
        signature = self.sign(_binding_payload(spki, int(not_after.timestamp())))
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                TLS_BINDING_OID, _encode_binding(self._public_bytes, signature)
            ),
            critical=False,
        )
        cert = builder.sign(tls_key, hashes.SHA256())
        return TLSCredentials(
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            private_key_pem=tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    # -- storage --------------------------------------------------------------------------------

    def private_key_pem(self, passphrase: bytes | str | None = None) -> bytes:
        """The private key as PEM PKCS#8, encrypted when a passphrase is given."""
        if passphrase is None:
            encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        else:
            secret = _passphrase_bytes(passphrase)
            if not secret:
                raise IdentityError("an empty passphrase would not protect the key")
            encryption = serialization.BestAvailableEncryption(secret)
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def save(
        self,
        path: str | os.PathLike[str],
        passphrase: bytes | str | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Write the key to ``path`` as PEM, mode 0600, atomically.

        The key goes to a temporary file in the same directory, created with
        ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600 (never readable by others, even
        briefly), flushed to disk, then moved into place.

        Args:
            path: the key file.
            passphrase: encrypt the key with it (PKCS#8 with the best available encryption).
            overwrite: replace an existing file; by default an existing file is an error.

        Raises:
            IdentityError: the file exists (and ``overwrite`` is false) or cannot be written.
        """
        target = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(target)
        data = self.private_key_pem(passphrase)
        temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
        flags = (
            os.O_WRONLY
            | os.O_CREAT
            | os.O_EXCL
            | getattr(os, "O_NOFOLLOW", 0)
            | getattr(os, "O_CLOEXEC", 0)
        )
        try:
            fd = os.open(temp, flags, 0o600)
        except OSError as exc:
            raise IdentityError(f"cannot write key file in {directory}: {exc.strerror}") from exc
        try:
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)  # the umask may only have removed bits; make it exact
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            _move_into_place(temp, target, overwrite)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        passphrase: bytes | str | None = None,
        *,
        allow_insecure: bool = False,
    ) -> Identity:
        """Load an identity written by :meth:`save`.

        Args:
            path: the key file.
            passphrase: the passphrase of an encrypted key file.
            allow_insecure: accept a file that group or others may access.

        Returns:
            The identity.

        Raises:
            FileNotFoundError: no file at ``path``.
            InsecureKeyFileError: the file's mode grants group/other access (POSIX).
            IdentityError: the file is not an Ed25519 PEM key, is encrypted and no (or a wrong)
                passphrase was given, or a passphrase was given for an unencrypted key.
        """
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IdentityError(f"cannot read key file {name}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)  # check the file we actually read, not the name (no TOCTOU)
            if not stat.S_ISREG(info.st_mode):
                raise IdentityError(f"{name} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if os.name == "posix" and mode & 0o077 and not allow_insecure:
                raise InsecureKeyFileError(
                    f"key file {name} has mode {mode:04o}: group or others may access it; "
                    f"run 'chmod 600 {name}' (or pass allow_insecure=True)"
                )
            chunks = []
            remaining = MAX_KEY_FILE_SIZE + 1
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > MAX_KEY_FILE_SIZE:
            raise IdentityError(f"{name} is too large to be a key file")
        return cls._from_pem(data, passphrase, name)

    @classmethod
    def load_or_create(
        cls,
        path: str | os.PathLike[str],
        passphrase: bytes | str | None = None,
        rng: random.Random | None = None,
    ) -> Identity:
        """Load the identity at ``path``, or generate and save a new one if there is none.

        Args:
            path: the key file.
            passphrase: decrypts an existing file, encrypts a new one.
            rng: seeded generator for a new key (tests only).

        Raises:
            IdentityError: as for :meth:`load` and :meth:`save`.
        """
        try:
            return cls.load(path, passphrase)
        except FileNotFoundError:
            pass
        identity = cls.generate(rng)
        try:
            identity.save(path, passphrase)
        except IdentityError:
            if os.path.exists(path):  # another process created it meanwhile: use theirs
                return cls.load(path, passphrase)
            raise
        return identity

    @classmethod
    def _from_pem(cls, data: bytes, passphrase: bytes | str | None, name: str) -> Identity:
        encrypted = b"ENCRYPTED PRIVATE KEY" in data
        if encrypted and passphrase is None:
            raise IdentityError(f"key file {name} is encrypted: a passphrase is required")
        if not encrypted and passphrase is not None:
            raise IdentityError(f"key file {name} is not encrypted, but a passphrase was given")
        secret = None if passphrase is None else _passphrase_bytes(passphrase)
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            if encrypted:
                raise IdentityError(
                    f"cannot decrypt key file {name}: wrong passphrase or corrupted file"
                ) from None
            raise IdentityError(f"{name} is not a PEM private key file") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IdentityError(f"{name} holds a key that is not Ed25519")
        return cls(key)


def verify_tls_binding(
    cert_der: bytes,
    ed25519_public_key: bytes,
    now: datetime.datetime | None = None,
) -> bool:
    """Check that a TLS certificate belongs to the holder of an Ed25519 identity; never raises.

    Accepted are (a) a certificate made by :meth:`Identity.tls_certificate` whose binding
    extension names ``ed25519_public_key`` and whose binding signature over the certificate's
    public key and ``notAfter`` verifies, and (b) a certificate whose own public key *is*
    ``ed25519_public_key`` (:meth:`Identity.certificate_pem`).

    Args:
        cert_der: the peer certificate, DER (PEM is accepted too).
        ed25519_public_key: the raw Ed25519 key the peer should have, e.g. from its AoR record.
        now: if given, the certificate must also be within its validity period.

    Returns:
        True when the certificate is bound to the key; False otherwise or on malformed input.
    """
    try:
        data = bytes(cert_der)
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
        expected = bytes(ed25519_public_key)
        if len(expected) != PUBLIC_KEY_SIZE:
            return False
        if now is not None:
            moment = _utc(now)
            if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
                return False
        public_key = cert.public_key()
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            raw = public_key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return secrets.compare_digest(raw, expected)
        try:
            extension = cert.extensions.get_extension_for_oid(TLS_BINDING_OID)
        except x509.ExtensionNotFound:
            return False
        value = extension.value
        if not isinstance(value, x509.UnrecognizedExtension):
            return False
        bound_key, signature = _decode_binding(value.value)
        if not secrets.compare_digest(bound_key, expected):
            return False
        spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        not_after = int(cert.not_valid_after_utc.timestamp())
        return Identity.verify(expected, _binding_payload(spki, not_after), signature)
    except Exception:  # hostile DER reaches many parser errors; the answer is simply "no"
        return False


# -- helpers ---------------------------------------------------------------------------------------


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    if isinstance(passphrase, str):
        return passphrase.encode("utf-8")
    if isinstance(passphrase, bytes | bytearray):
        return bytes(passphrase)
    raise IdentityError("a passphrase is bytes or str")


def _certificate_builder(
    common_name: str,
    public_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    days: int,
    aors: tuple[str, ...] | list[str],
    rng: random.Random | None,
) -> x509.CertificateBuilder:
    if days <= 0:
        raise IdentityError("a certificate is valid for at least one day")
    start = _utc(now).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if rng is None:
        serial = x509.random_serial_number()
    else:
        serial = (int.from_bytes(rng.randbytes(20), "big") >> 1) | 1  # RFC 5280 §4.1.2.2
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start - CERTIFICATE_BACKDATE)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if aors:
        # RFC 5922 §7.1: SIP domain identities live in subjectAltName URIs
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(a) for a in aors]),
            critical=False,
        )
    return builder


def _binding_payload(spki_der: bytes, not_after: int) -> bytes:
    return TLS_BINDING_PREFIX + spki_der + not_after.to_bytes(8, "big")


def _encode_binding(public_key: bytes, signature: bytes) -> bytes:
    # DER: SEQUENCE { OCTET STRING (32), OCTET STRING (64) }; every length is short-form
    body = b"\x04\x20" + public_key + b"\x04\x40" + signature
    return b"\x30" + bytes([len(body)]) + body


def _decode_binding(value: bytes) -> tuple[bytes, bytes]:
    if (
        len(value) != 2 + 2 + PUBLIC_KEY_SIZE + 2 + SIGNATURE_SIZE
        or value[:4] != b"\x30\x64\x04\x20"
        or value[36:38] != b"\x04\x40"
    ):
        raise ValueError("malformed identity binding")
    return value[4:36], value[38:]


def _move_into_place(temp: str, target: str, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)  # atomic, and fails if the target exists
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system
            if os.path.lexists(target):
                raise FileExistsError(target) from None
            os.rename(temp, target)
            return
        os.unlink(temp)
    except FileExistsError:
        raise IdentityError(f"key file {target} already exists") from None
    except OSError as exc:
        raise IdentityError(f"cannot write key file {target}: {exc.strerror}") from exc


def _fsync_directory(directory: str) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
