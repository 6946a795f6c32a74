"""The node: identity, transports, overlay, locators, Bonjour and calls behind one object.

See :class:`p2psip.node.node.Node`.
"""

from p2psip.node.node import (
    Call,
    CallEnded,
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
    "IncomingCall",
    "MediaStatistics",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeEvent",
]
