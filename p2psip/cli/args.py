"""Argument helpers shared by the commands (kept apart so a command imports only its own stack)."""

from __future__ import annotations

import argparse

__all__ = ["hostport", "split_hostport"]


def split_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:5060`` / ``[::1]:5060`` -> (host, port).

    Raises:
        ValueError: with a one-line explanation.
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":") or "5060"
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:5060 or [::1]:5060), got {text!r}")
    return host, int(port_text)


def hostport(text: str) -> tuple[str, int]:
    """An argparse ``type=``: :func:`split_hostport` with argparse's error."""
    try:
        return split_hostport(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
