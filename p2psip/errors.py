"""The single error tree of p2psip.

Peer misbehaviour never raises out of a sans-IO core: it becomes an event or an automatic
error response. These exceptions are for the user-facing API and for parsers, whose errors
carry the SIP status code to answer with.
"""

from __future__ import annotations


class P2PSIPError(Exception):
    """Base class of every error raised by p2psip."""


class SIPParseError(P2PSIPError):
    """A SIP message, URI or header value could not be parsed.

    Attributes:
        status: the SIP status code a server should answer with (400, 505, 416, ...).
        reason: the reason phrase to use in that answer.
    """

    def __init__(self, message: str, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or message


class MessageTooLarge(SIPParseError):
    """A message exceeded the configured maximum size (answered with 513)."""

    def __init__(self, message: str = "Message Too Large") -> None:
        super().__init__(message, status=513, reason="Message Too Large")


class TransportError(P2PSIPError):
    """A message could not be sent (connection refused, closed, unreachable, ...)."""


class TransactionTimeout(P2PSIPError):
    """A client transaction ended without a final response (Timer B or F)."""


class AuthenticationError(P2PSIPError):
    """Credentials were refused or a challenge could not be answered."""


class RegistrationError(P2PSIPError):
    """A registrar refused a REGISTER (or answered it in a way we cannot use).

    Attributes:
        status: the final status code (e.g. 403, 404, 423, 500).
        reason: the reason phrase or an explanation.
    """

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class LocatorError(P2PSIPError):
    """An address-of-record could not be resolved (base of the locator errors)."""


class NotFound(LocatorError):
    """No locator knows the address-of-record."""


class RecordRefused(LocatorError):
    """A record was found but failed verification (bad signature, wrong key, expired...)."""


class OverlayUnreachable(LocatorError):
    """No overlay node answered (bootstrap failed or every contact is dead)."""


class IdentityError(P2PSIPError):
    """An identity key could not be generated, saved, loaded or used."""


class InsecureKeyFileError(IdentityError):
    """A private key file is accessible to group or others (its mode is not 0600)."""


class RecordError(P2PSIPError, ValueError):
    """An overlay record (AoR record, device entry, AoR certificate) is malformed or invalid."""


class InvalidAoR(RecordError):
    """A string is not a usable address-of-record (``sip:user@host``)."""
