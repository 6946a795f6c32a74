"""The node: identity, transports, overlay, locators, Bonjour and calls behind one object.

See :class:`p2psip.node.node.Node`.
"""

from p2psip.node.node import (
    Call,
    CallEnded,
    CallerIdentity,
    CallStateChanged,
    IncomingCall,
    MediaStatistics,
    Node,
    NodeConfig,
    NodeError,
    NodeEvent,
)

__all__ = [
    "Call",
    "CallEnded",
    "CallStateChanged",
    "CallerIdentity",
    "IncomingCall",
    "MediaStatistics",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeEvent",
]
