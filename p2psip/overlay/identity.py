"""A node's or user's long-term identity: an Ed25519 key pair.

The Ed25519 key signs AoR records (see :mod:`p2psip.overlay.records`); its fingerprint is what a
user compares out of band. For SIP over TLS the same identity gives two kinds of certificate:

* :meth:`Identity.certificate_pem` - a self-signed X.509 certificate over the Ed25519 key itself.
* :meth:`Identity.tls_certificate` - a certificate for a fresh TLS key (Ed25519 by default,
  ECDSA P-256 for TLS stacks without Ed25519) that carries an *identity binding*: an extension in
  which the identity key signs the certificate's public key. :func:`verify_tls_binding` checks a
  peer's certificate against the Ed25519 key found in its AoR record; the TLS handshake itself
  proves that the peer holds the certificate's private key.

Ed25519 certificates work in TLS 1.3 (RFC 8446 §4.2.3) and, with OpenSSL, in TLS 1.2 (RFC 8422
§5.1.3).

Ed25519 runs on libsodium (PyNaCl); key files and certificates are written and read by our own DER
code (:mod:`p2psip.overlay.der`). ``cryptography``, a large library, is imported only on the rare
paths that need it: encrypted key files and ECDSA TLS certificates.

Key files are PEM PKCS#8 (RFC 8410 §7, RFC 5958; optionally encrypted with a passphrase), written
atomically with mode 0600 and refused on load when group or others may read them. Identities are
never pickled.
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
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NoReturn

from nacl import bindings as _sodium
from nacl.exceptions import CryptoError

from p2psip.errors import IdentityError, InsecureKeyFileError
from p2psip.overlay import der
from p2psip.overlay.der import DERError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "ED25519_OID",
    "TLS_BINDING_OID",
    "Identity",
    "TLSCredentials",
    "TLSKeyType",
    "fingerprint_of",
    "short_fingerprint_of",
    "verify_tls_binding",
]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
#: Key files larger than this are not key files.
MAX_KEY_FILE_SIZE = 64 * 1024
#: Backdating of ``notBefore``, so that a peer whose clock is a little behind accepts the cert.
CERTIFICATE_BACKDATE = datetime.timedelta(minutes=5)

#: OID of the identity-binding extension: a UUID-based OID (ITU-T X.667 / RFC 4122 §4.1 arc
#: 2.25), which needs no registration.
TLS_BINDING_OID = "2.25.233065262399196248211660220002685419634"
#: Domain separation: an identity-binding signature can never be mistaken for a record signature.
TLS_BINDING_PREFIX = b"p2psip-tls-binding-v1\x00"
#: id-Ed25519 (RFC 8410 §3).
ED25519_OID = "1.3.101.112"

#: Key types of :meth:`Identity.tls_certificate`.
TLSKeyType = Literal["ed25519", "ecdsa-p256"]

# RFC 8410 §3: the AlgorithmIdentifier of Ed25519 has its parameters absent.
_ED25519_ALGORITHM = der.sequence(der.oid(ED25519_OID))
# RFC 5758 §3.2: ecdsa-with-SHA256, parameters absent.
_ECDSA_SHA256_ALGORITHM = der.sequence(der.oid("1.2.840.10045.4.3.2"))
_OID_COMMON_NAME = "2.5.4.3"  # RFC 5280 Appendix A, id-at-commonName
_OID_BASIC_CONSTRAINTS = "2.5.29.19"  # RFC 5280 §4.2.1.9
_OID_EXT_KEY_USAGE = "2.5.29.37"  # RFC 5280 §4.2.1.12
_OID_SUBJECT_ALT_NAME = "2.5.29.17"  # RFC 5280 §4.2.1.6
_OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
_MAX_COMMON_NAME = 64  # RFC 5280 Appendix A, ub-common-name
_URI_TAG = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
#: PEM labels of private keys in formats other than PKCS#8; none of them holds Ed25519.
_OTHER_KEY_LABELS = frozenset({"RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"})

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
        certificate_pem: the self-signed certificate with the identity binding.
        private_key_pem: its private key, PKCS#8, unencrypted: keep it in memory or write it
            with the same care as the identity key.
    """

    certificate_pem: bytes
    private_key_pem: bytes = field(repr=False)

    @property
    def certificate_der(self) -> bytes:
        """The certificate in DER form (what a TLS stack returns as the peer certificate)."""
        return der.pem_decode(self.certificate_pem, "CERTIFICATE")


class Identity:
    """An Ed25519 key pair: signs records, names its owner by a fingerprint.

    Build one with :meth:`generate`, :meth:`from_private_bytes`, :meth:`load` or
    :meth:`load_or_create`. The private key never appears in ``repr`` and identities refuse to
    be pickled.
    """

    __slots__ = ("_public_bytes", "_secret")

    def __init__(self, private_key: bytes | Ed25519PrivateKey) -> None:
        """Wrap an Ed25519 private key (prefer the class methods).

        Args:
            private_key: the 32-byte seed (RFC 8032 §5.1.5), or a ``cryptography``
                ``Ed25519PrivateKey``.

        Raises:
            IdentityError: ``private_key`` is neither.
        """
        seed = _seed_of(private_key)
        public, secret = _sodium.crypto_sign_seed_keypair(seed)
        self._public_bytes: bytes = public
        self._secret: bytes = secret  # libsodium's form: seed || public key

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
        seed = secrets.token_bytes(SEED_SIZE) if rng is None else rng.randbytes(SEED_SIZE)
        return cls.from_private_bytes(seed)

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """Build an identity from a raw 32-byte Ed25519 private key (RFC 8032 §5.1.5).

        Raises:
            IdentityError: ``seed`` is not 32 bytes.
        """
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
            raise IdentityError("an Ed25519 private key is 32 bytes")
        return cls(bytes(seed))

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
        """Sign ``data`` with Ed25519 (RFC 8032 §5.1.6); returns the 64-byte signature.

        Raises:
            TypeError: ``data`` is not a bytes-like object.
        """
        return _ed25519_sign(self._secret, _buffer(data))

    @staticmethod
    def verify(public_key_bytes: bytes, data: bytes, signature: bytes) -> bool:
        """Check an Ed25519 signature (RFC 8032 §5.1.7); never raises.

        Args:
            public_key_bytes: the signer's raw 32-byte public key.
            data: the signed bytes.
            signature: the 64-byte signature.

        Returns:
            True when the signature is valid; False on a bad signature and on any malformed
            argument (wrong length, wrong type, invalid or small-order point, S not below L).
        """
        try:
            key = _buffer(public_key_bytes)
            sig = _buffer(signature)
            message = _buffer(data)
        except TypeError:
            return False
        if len(key) != PUBLIC_KEY_SIZE or len(sig) != SIGNATURE_SIZE:
            return False
        try:
            _sodium.crypto_sign_open(sig + message, key)
        except (CryptoError, ValueError, TypeError):
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
        """A self-signed X.509 v3 certificate over this Ed25519 key (RFC 5280, RFC 8410), PEM.

        The private key is :meth:`save`'s key file.

        Args:
            common_name: the subject CN (e.g. the user's display name or AoR), 1 to 64
                characters.
            now: the current time (a naive datetime is taken as UTC).
            days: validity in days from ``now``.
            aors: AoRs (``sip:`` URIs) put in subjectAltName as URIs (RFC 5922 §7.1).
            rng: seeded generator for the serial number (tests); ``None`` uses the CSPRNG.

        Returns:
            The certificate in PEM form.

        Raises:
            IdentityError: a bad common name, AoR or number of days.
        """
        not_before, not_after = _validity(now, days)
        tbs = _tbs_certificate(
            serial=_serial_number(rng),
            algorithm=_ED25519_ALGORITHM,
            common_name=common_name,
            not_before=not_before,
            not_after=not_after,
            spki=_ed25519_spki(self._public_bytes),
            extensions=_standard_extensions(aors),
        )
        return _certificate_pem(tbs, _ED25519_ALGORITHM, self.sign(tbs))

    def tls_certificate(
        self,
        common_name: str,
        now: datetime.datetime,
        days: int = 30,
        aors: tuple[str, ...] | list[str] = (),
        rng: random.Random | None = None,
        key_type: TLSKeyType = "ed25519",
    ) -> TLSCredentials:
        """A fresh TLS key and its self-signed certificate, bound to this Ed25519 identity.

        The TLS key is a new key, not the identity key. The certificate carries a non-critical
        extension (:data:`TLS_BINDING_OID`) holding
        ``SEQUENCE { OCTET STRING ed25519-public-key, OCTET STRING signature }`` where the
        signature is the identity's Ed25519 signature over::

            b"p2psip-tls-binding-v1\\x00" || DER(SubjectPublicKeyInfo) || u64be(notAfter)

        (``notAfter`` in whole seconds since the Unix epoch), so a leaked TLS key stops being
        vouched for when its certificate expires.

        Args:
            common_name: the subject CN, 1 to 64 characters.
            now: the current time (naive = UTC).
            days: validity in days; keep it short, the certificate is cheap to renew.
            aors: AoRs put in subjectAltName as URIs.
            rng: seeded generator for the TLS key and serial (tests only); ``None`` uses the
                CSPRNG.
            key_type: ``"ed25519"`` (TLS 1.3, and TLS 1.2 with OpenSSL) or ``"ecdsa-p256"``
                for TLS stacks without Ed25519 (this one imports ``cryptography``).

        Returns:
            The certificate and its (unencrypted) private key, both PEM.

        Raises:
            IdentityError: an unknown key type, a bad common name, AoR or number of days.
        """
        if key_type not in ("ed25519", "ecdsa-p256"):
            raise IdentityError(f"unknown TLS key type {key_type!r}: ed25519 or ecdsa-p256")
        not_before, not_after = _validity(now, days)
        standard = _standard_extensions(aors)
        if key_type == "ed25519":
            spki, algorithm, sign, key_pem = _ed25519_tls_key(rng)
        else:
            spki, algorithm, sign, key_pem = _ecdsa_tls_key(rng)
        binding = self.sign(_binding_payload(spki, int(not_after.timestamp())))
        tbs = _tbs_certificate(
            serial=_serial_number(rng),
            algorithm=algorithm,
            common_name=common_name,
            not_before=not_before,
            not_after=not_after,
            spki=spki,
            extensions=[
                *standard,
                _extension(TLS_BINDING_OID, _encode_binding(self._public_bytes, binding)),
            ],
        )
        return TLSCredentials(
            certificate_pem=_certificate_pem(tbs, algorithm, sign(tbs)),
            private_key_pem=key_pem,
        )

    # -- storage --------------------------------------------------------------------------------

    def private_key_pem(self, passphrase: bytes | str | None = None) -> bytes:
        """The private key as PEM PKCS#8 (RFC 8410 §7), encrypted when a passphrase is given.

        Encryption uses ``cryptography``'s best available PKCS#8 encryption (imported here).
        """
        seed = self._secret[:SEED_SIZE]
        if passphrase is None:
            return _pkcs8_pem(seed)
        secret = _passphrase_bytes(passphrase)
        if not secret:
            raise IdentityError("an empty passphrase would not protect the key")
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(secret),
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
        if passphrase is not None:
            return cls(_decrypt_pem(data, _passphrase_bytes(passphrase), name))
        try:
            body = der.pem_decode(data, "PRIVATE KEY")
        except DERError:
            if _OTHER_KEY_LABELS.intersection(der.pem_labels(data)):
                raise IdentityError(f"{name} holds a key that is not Ed25519") from None
            raise IdentityError(f"{name} is not a PEM private key file") from None
        try:
            algorithm, seed, public_key = _parse_pkcs8(body)
        except DERError:
            raise IdentityError(f"{name} is not a PEM private key file") from None
        if algorithm != ED25519_OID:
            raise IdentityError(f"{name} holds a key that is not Ed25519")
        identity = cls(seed)
        if public_key is not None and not secrets.compare_digest(
            public_key, identity._public_bytes
        ):
            raise IdentityError(f"{name}: the public key does not match the private key")
        return identity


def verify_tls_binding(
    cert_der: bytes,
    ed25519_public_key: bytes,
    now: datetime.datetime | None = None,
) -> bool:
    """Check that a TLS certificate belongs to the holder of an Ed25519 identity; never raises.

    Accepted are (a) a certificate whose own public key *is* ``ed25519_public_key``
    (:meth:`Identity.certificate_pem`), and (b) a certificate of any key type whose binding
    extension names ``ed25519_public_key`` and whose binding signature over the certificate's
    SubjectPublicKeyInfo and ``notAfter`` verifies (:meth:`Identity.tls_certificate`). The
    certificate is read strictly as DER (RFC 5280 §4.1); anything malformed is refused.

    Args:
        cert_der: the peer certificate, DER (PEM is accepted too).
        ed25519_public_key: the raw Ed25519 key the peer should have, e.g. from its AoR record.
        now: if given, the certificate must also be within its validity period.

    Returns:
        True when the certificate is bound to the key; False otherwise or on malformed input.
    """
    try:
        expected = _buffer(ed25519_public_key)
        data = _buffer(cert_der)
        if len(expected) != PUBLIC_KEY_SIZE:
            return False
        if data.lstrip().startswith(b"-----BEGIN"):
            data = der.pem_decode(data, "CERTIFICATE")
        cert = _parse_certificate(data)
        if now is not None and not cert.not_before <= _utc(now) <= cert.not_after:
            return False
        if cert.key_algorithm == ED25519_OID and secrets.compare_digest(cert.public_key, expected):
            return True
        extension = cert.extensions.get(TLS_BINDING_OID)
        if extension is None:
            return False
        bound_key, signature = _decode_binding(extension)
        if not secrets.compare_digest(bound_key, expected):
            return False
        payload = _binding_payload(cert.spki, int(cert.not_after.timestamp()))
        return Identity.verify(expected, payload, signature)
    except (DERError, TypeError):
        return False
    except Exception:  # a last resort: the answer to anything unforeseen is simply "no"
        return False


# -- helpers ---------------------------------------------------------------------------------------


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _buffer(value: object) -> bytes:
    """The bytes of a bytes-like object; TypeError for anything else (str, int, None...)."""
    return memoryview(value).tobytes()  # type: ignore[arg-type]


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    if isinstance(passphrase, str):
        return passphrase.encode("utf-8")
    if isinstance(passphrase, bytes | bytearray):
        return bytes(passphrase)
    raise IdentityError("a passphrase is bytes or str")


def _seed_of(private_key: object) -> bytes:
    if isinstance(private_key, bytes | bytearray) and len(private_key) == SEED_SIZE:
        return bytes(private_key)
    if "cryptography" in sys.modules:  # a cryptography key implies cryptography is loaded
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            return private_key.private_bytes_raw()
    raise IdentityError("an identity is an Ed25519 private key")


def _ed25519_sign(secret: bytes, data: bytes) -> bytes:
    # libsodium returns signature || message (RFC 8032 §5.1.6 signature first)
    return _sodium.crypto_sign(data, secret)[:SIGNATURE_SIZE]


def _decrypt_pem(data: bytes, secret: bytes, name: str) -> bytes:
    """The Ed25519 seed of an encrypted PKCS#8 file, decrypted by ``cryptography``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise IdentityError(
            f"cannot decrypt key file {name}: wrong passphrase or corrupted file"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"{name} holds a key that is not Ed25519")
    return key.private_bytes_raw()


# -- PKCS#8 (RFC 5958 §2, RFC 8410 §7) -------------------------------------------------------------


def _pkcs8_pem(seed: bytes) -> bytes:
    """An unencrypted v1 OneAsymmetricKey, as OpenSSL writes it."""
    body = der.sequence(
        der.integer(0),  # v1: no public key (RFC 5958 §2)
        _ED25519_ALGORITHM,
        der.octet_string(der.octet_string(seed)),  # RFC 8410 §7: CurvePrivateKey in privateKey
    )
    return der.pem_encode("PRIVATE KEY", body)


def _parse_pkcs8(data: bytes) -> tuple[str, bytes, bytes | None]:
    """``(algorithm OID, Ed25519 seed, public key or None)`` of a OneAsymmetricKey.

    For another algorithm than Ed25519 the seed is empty and the rest is not examined.
    """
    fields = der.decode(data).expect(der.SEQUENCE).children()
    if len(fields) < 3:
        raise DERError("a OneAsymmetricKey has at least three fields")
    version = der.decode_integer(fields[0])
    if version not in (0, 1):  # RFC 5958 §2: v1(0), v2(1)
        raise DERError("unknown OneAsymmetricKey version")
    algorithm = fields[1].expect(der.SEQUENCE).children()
    if not algorithm:
        raise DERError("empty AlgorithmIdentifier")
    oid = der.decode_oid(algorithm[0])
    if oid != ED25519_OID:
        return oid, b"", None
    if len(algorithm) != 1:
        raise DERError("Ed25519 parameters must be absent")  # RFC 8410 §3
    seed = der.decode(fields[2].expect(der.OCTET_STRING).content).expect(der.OCTET_STRING).content
    if len(seed) != SEED_SIZE:
        raise DERError("an Ed25519 private key is 32 bytes")
    public_key = None
    rest = fields[3:]
    if rest and rest[0].tag == 0xA0:  # attributes [0] IMPLICIT SET OF Attribute: ignored
        rest = rest[1:]
    if rest and rest[0].tag == 0x81:  # publicKey [1] IMPLICIT BIT STRING, v2 only
        if version != 1:
            raise DERError("a v1 OneAsymmetricKey has no public key")  # RFC 5958 §2
        public_key, unused = der.decode_bit_string(rest[0], tag=0x81)
        if unused or len(public_key) != PUBLIC_KEY_SIZE:
            raise DERError("an Ed25519 public key is 32 bytes")
        rest = rest[1:]
    if rest:
        raise DERError("unexpected fields in a OneAsymmetricKey")
    return oid, seed, public_key


# -- certificates (RFC 5280 §4.1) ------------------------------------------------------------------


def _validity(now: datetime.datetime, days: int) -> tuple[datetime.datetime, datetime.datetime]:
    if days <= 0:
        raise IdentityError("a certificate is valid for at least one day")
    start = _utc(now).replace(microsecond=0)
    try:
        return start - CERTIFICATE_BACKDATE, start + datetime.timedelta(days=days)
    except OverflowError:
        raise IdentityError("certificate validity beyond the year 9999") from None


def _serial_number(rng: random.Random | None) -> int:
    raw = secrets.token_bytes(20) if rng is None else rng.randbytes(20)
    # RFC 5280 §4.1.2.2: positive, at most 20 octets (159 bits: no leading zero octet needed)
    return (int.from_bytes(raw, "big") >> 1) | 1


def _name(common_name: str) -> bytes:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= _MAX_COMMON_NAME:
        raise IdentityError("a certificate common name is 1 to 64 characters")
    try:
        value = common_name.encode("utf-8")
    except UnicodeEncodeError:
        raise IdentityError("a certificate common name is valid Unicode text") from None
    attribute = der.sequence(der.oid(_OID_COMMON_NAME), der.tlv(der.UTF8_STRING, value))
    return der.sequence(der.set_of(attribute))  # RDNSequence of one RDN (RFC 5280 §4.1.2.4)


def _ed25519_spki(public_key: bytes) -> bytes:
    return der.sequence(_ED25519_ALGORITHM, der.bit_string(public_key))  # RFC 8410 §4


def _extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    # RFC 5280 §4.1: critical BOOLEAN DEFAULT FALSE, so FALSE is omitted (X.690 §11.5)
    flag = der.boolean(True) if critical else b""
    return der.sequence(der.oid(oid), flag, der.octet_string(value))


def _standard_extensions(aors: tuple[str, ...] | list[str]) -> list[bytes]:
    extensions = [
        # RFC 5280 §4.2.1.9: an end entity, cA FALSE (the default, so an empty SEQUENCE)
        _extension(_OID_BASIC_CONSTRAINTS, der.sequence(), critical=True),
        _extension(
            _OID_EXT_KEY_USAGE,
            der.sequence(der.oid(_OID_SERVER_AUTH), der.oid(_OID_CLIENT_AUTH)),
        ),
    ]
    if aors:
        # RFC 5922 §7.1: SIP domain identities live in subjectAltName URIs
        names = []
        for aor in aors:
            if not isinstance(aor, str) or not aor or not aor.isascii() or not aor.isprintable():
                raise IdentityError(f"an AoR in a certificate is a printable ASCII URI: {aor!r}")
            names.append(der.tlv(_URI_TAG, aor.encode("ascii")))
        extensions.append(_extension(_OID_SUBJECT_ALT_NAME, der.sequence(*names)))
    return extensions


def _tbs_certificate(
    *,
    serial: int,
    algorithm: bytes,
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    spki: bytes,
    extensions: list[bytes],
) -> bytes:
    name = _name(common_name)
    return der.sequence(
        der.context(0, der.integer(2)),  # version [0] EXPLICIT v3 (RFC 5280 §4.1.2.1)
        der.integer(serial),
        algorithm,  # must equal signatureAlgorithm (RFC 5280 §4.1.2.3)
        name,  # issuer = subject: self-signed
        der.sequence(der.time(not_before), der.time(not_after)),  # RFC 5280 §4.1.2.5
        name,
        spki,
        der.context(3, der.sequence(*extensions)),  # extensions [3] EXPLICIT
    )


def _certificate_pem(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    return der.pem_encode("CERTIFICATE", der.sequence(tbs, algorithm, der.bit_string(signature)))


_TLSKey = tuple[bytes, bytes, Callable[[bytes], bytes], bytes]


def _ed25519_tls_key(rng: random.Random | None) -> _TLSKey:
    """``(SPKI DER, signature algorithm, sign function, PKCS#8 PEM)`` of a new Ed25519 key."""
    seed = secrets.token_bytes(SEED_SIZE) if rng is None else rng.randbytes(SEED_SIZE)
    public, secret = _sodium.crypto_sign_seed_keypair(seed)
    return (
        _ed25519_spki(public),
        _ED25519_ALGORITHM,
        lambda tbs: _ed25519_sign(secret, tbs),  # RFC 8410 §6: pure Ed25519, no prehash
        _pkcs8_pem(seed),
    )


def _ecdsa_tls_key(rng: random.Random | None) -> _TLSKey:
    """As :func:`_ed25519_tls_key` for ECDSA P-256 with SHA-256, made by ``cryptography``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if rng is None:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        scalar = int.from_bytes(rng.randbytes(40), "big") % (_P256_ORDER - 1) + 1
        key = ec.derive_private_key(scalar, ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        spki,
        _ECDSA_SHA256_ALGORITHM,
        lambda tbs: key.sign(tbs, ec.ECDSA(hashes.SHA256())),  # DER Ecdsa-Sig-Value
        key_pem,
    )


@dataclass(frozen=True, slots=True)
class _Certificate:
    """What :func:`verify_tls_binding` needs of a parsed certificate."""

    spki: bytes  # the DER SubjectPublicKeyInfo
    key_algorithm: str
    public_key: bytes  # the subjectPublicKey BIT STRING's octets
    not_before: datetime.datetime
    not_after: datetime.datetime
    extensions: dict[str, bytes]  # extnID -> extnValue


def _algorithm_identifier(element: der.Element) -> str:
    parts = element.expect(der.SEQUENCE).children()
    if not 1 <= len(parts) <= 2:
        raise DERError("an AlgorithmIdentifier is an OID and optional parameters")
    return der.decode_oid(parts[0])


def _check_name(element: der.Element) -> None:
    # RFC 5280 §4.1.2.4: SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    for rdn in element.expect(der.SEQUENCE).children():
        attributes = rdn.expect(der.SET).children()
        if not attributes:
            raise DERError("empty RelativeDistinguishedName")
        for attribute in attributes:
            parts = attribute.expect(der.SEQUENCE).children()
            if len(parts) != 2:
                raise DERError("an AttributeTypeAndValue has two fields")
            der.decode_oid(parts[0])


def _parse_extensions(element: der.Element) -> dict[str, bytes]:
    inner = element.children()
    if len(inner) != 1:
        raise DERError("[3] holds one SEQUENCE OF Extension")
    extensions: dict[str, bytes] = {}
    items = inner[0].expect(der.SEQUENCE).children()
    if not items:
        raise DERError("empty extensions")  # RFC 5280 §4.1: SIZE (1..MAX)
    for item in items:
        parts = item.expect(der.SEQUENCE).children()
        if len(parts) == 3:
            if not der.decode_boolean(parts[1]):
                raise DERError("critical FALSE is the default and must be omitted in DER")
        elif len(parts) != 2:
            raise DERError("an Extension is extnID, critical and extnValue")
        oid = der.decode_oid(parts[0])
        if oid in extensions:
            raise DERError(f"extension {oid} twice")  # RFC 5280 §4.2
        extensions[oid] = parts[-1].expect(der.OCTET_STRING).content
    return extensions


def _parse_certificate(data: bytes) -> _Certificate:
    """Walk a DER certificate (RFC 5280 §4.1) strictly; raises only :class:`DERError`."""
    top = der.decode(data).expect(der.SEQUENCE).children()
    if len(top) != 3:
        raise DERError("a Certificate is tbsCertificate, signatureAlgorithm, signatureValue")
    tbs, signature_algorithm, signature = top
    _algorithm_identifier(signature_algorithm)
    der.decode_bit_string(signature)
    fields = tbs.expect(der.SEQUENCE).children()
    version = 0
    if fields and fields[0].tag == 0xA0:  # version [0] EXPLICIT, absent for v1
        inner = fields[0].children()
        if len(inner) != 1:
            raise DERError("[0] holds one INTEGER")
        version = der.decode_integer(inner[0])
        if version != 2:  # v1 must be omitted (DER default), v2 is not supported
            raise DERError("not an X.509 v3 certificate")
        fields = fields[1:]
    if len(fields) < 6:
        raise DERError("truncated TBSCertificate")
    serial, algorithm, issuer, validity, subject, spki = fields[:6]
    der.decode_integer(serial)
    _algorithm_identifier(algorithm)
    if algorithm.encoded != signature_algorithm.encoded:
        raise DERError("the two signature algorithms differ")  # RFC 5280 §4.1.1.2
    _check_name(issuer)
    _check_name(subject)
    times = validity.expect(der.SEQUENCE).children()
    if len(times) != 2:
        raise DERError("a Validity is notBefore and notAfter")
    not_before, not_after = (der.decode_time(t) for t in times)
    spki_parts = spki.expect(der.SEQUENCE).children()
    if len(spki_parts) != 2:
        raise DERError("a SubjectPublicKeyInfo is an algorithm and a key")
    key_algorithm = _algorithm_identifier(spki_parts[0])
    public_key, unused = der.decode_bit_string(spki_parts[1])
    if key_algorithm == ED25519_OID and (
        spki_parts[0].encoded != _ED25519_ALGORITHM or unused or len(public_key) != 32
    ):
        raise DERError("malformed Ed25519 SubjectPublicKeyInfo")  # RFC 8410 §3, §4
    extensions: dict[str, bytes] = {}
    last = 0
    for element in fields[6:]:
        # issuerUniqueID [1], subjectUniqueID [2] (v2/v3), extensions [3] (v3): in this order
        if element.tag not in (0x81, 0x82, 0xA3) or element.tag & 0x1F <= last or version != 2:
            raise DERError("unexpected field in a TBSCertificate")
        last = element.tag & 0x1F
        if element.tag == 0xA3:
            extensions = _parse_extensions(element)
        else:
            der.decode_bit_string(element, tag=element.tag)
    return _Certificate(
        spki=spki.encoded,
        key_algorithm=key_algorithm,
        public_key=public_key,
        not_before=not_before,
        not_after=not_after,
        extensions=extensions,
    )


# -- the identity binding --------------------------------------------------------------------------


def _binding_payload(spki_der: bytes, not_after: int) -> bytes:
    return TLS_BINDING_PREFIX + spki_der + not_after.to_bytes(8, "big")


def _encode_binding(public_key: bytes, signature: bytes) -> bytes:
    # DER: SEQUENCE { OCTET STRING (32), OCTET STRING (64) }
    return der.sequence(der.octet_string(public_key), der.octet_string(signature))


def _decode_binding(value: bytes) -> tuple[bytes, bytes]:
    parts = der.decode(value).expect(der.SEQUENCE).children()
    if len(parts) != 2:
        raise DERError("malformed identity binding")
    public_key = parts[0].expect(der.OCTET_STRING).content
    signature = parts[1].expect(der.OCTET_STRING).content
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise DERError("malformed identity binding")
    return public_key, signature


# -- files -----------------------------------------------------------------------------------------


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
