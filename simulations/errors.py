"""The harness's errors (one tree, under :class:`p2psip.errors.P2PSIPError`)."""

from __future__ import annotations

from p2psip.errors import P2PSIPError

__all__ = ["ConfigError", "SimulationError", "SimulationStalled", "WorkerError"]


class SimulationError(P2PSIPError):
    """Base class of the simulation harness's errors."""


class ConfigError(SimulationError):
    """A simulation option or latency-model specification is invalid."""


class SimulationStalled(SimulationError):
    """The virtual loop has nothing scheduled but the awaited result is not ready (deadlock)."""


class WorkerError(SimulationError):
    """A real-mode worker process failed or answered something unexpected."""
