"""Multi-node simulations of the p2psip overlay: real UDP nodes or a virtual network.

``python -m simulations run --mode real|virtual --nodes N --seed S --out DIR`` runs the overlay's
own node code (:class:`~p2psip.overlay.aio.dht.DHTNode` with the signed-records
:class:`~p2psip.locator.aio.dht.DHTLocator`) either on real sockets of 127.0.0.1 spread over
worker processes, or in one process on an in-memory network whose clock jumps whenever every
node waits (:class:`~simulations.vloop.VirtualEventLoop`). ``python -m simulations sweep``
runs a grid over N, churn and loss. See ``simulations/README.md``.

Modules: :mod:`~simulations.vloop` (virtual-time event loop), :mod:`~simulations.network`
(in-memory datagrams, latency models), :mod:`~simulations.nodes` (the nodes of one loop and
their operations), :mod:`~simulations.workload` (phases and events), :mod:`~simulations.real`
(worker processes), :mod:`~simulations.metrics`, :mod:`~simulations.report`,
:mod:`~simulations.sweep`, :mod:`~simulations.runner`.
"""

from simulations.config import SimSettings
from simulations.errors import ConfigError, SimulationError, SimulationStalled, WorkerError

__all__ = ["ConfigError", "SimSettings", "SimulationError", "SimulationStalled", "WorkerError"]
