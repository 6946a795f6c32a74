"""Progress bars on stderr (tqdm), or nothing with ``--quiet``."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class _Silent:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


class Progress:
    """Hands out one bar per phase; every bar writes to stderr.

    Args:
        enabled: False for ``--quiet`` (and when tqdm is not installed).
        label: prefix of every bar (e.g. the run's name in a sweep).
    """

    def __init__(self, enabled: bool = True, label: str = "") -> None:
        self.label = label
        self._tqdm: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # the progress bar is a nicety
                tqdm = None
            else:
                # no monitor thread: real mode forks its workers, better with one thread only
                tqdm.monitor_interval = 0
            self._tqdm = tqdm

    def bar(self, description: str, total: float | None, unit: str = "it") -> Any:
        """A bar for one phase (close it when the phase ends)."""
        if self._tqdm is None:
            return _Silent()
        name = f"{self.label} {description}".strip()
        return self._tqdm(
            total=total,
            desc=name,
            unit=unit,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
        )
