"""Protocol timer values as data (RFC 3261 §17, Table 4).

Tests and the simulation harness pass their own :class:`TimerConfig`; derived timers are
properties so one change of T1 moves every timer that depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimerConfig:
    """SIP timer configuration.

    Args:
        t1: RTT estimate (RFC 3261 §17.1.1.1), default 500 ms.
        t2: maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
        t4: maximum duration a message remains in the network, 5 s.
        timer_c: proxy INVITE transaction timeout (> 3 min); used by UAs to cancel forever-ringing
            calls only if they choose to.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, for UDP only (initially T1)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait time for response retransmits in INVITE client COMPLETED (> 32 s for UDP)."""
        return max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, UDP only (initially T1)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE response retransmit interval (initially T1)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt (64*T1)."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """Wait time for ACK retransmits (T4 for UDP)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Wait time for non-INVITE request retransmits (64*T1 for UDP)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Wait time for response retransmits in non-INVITE client COMPLETED (T4 for UDP)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: wait time for accepted INVITE request retransmits (64*T1)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: wait time for retransmission of 2xx to INVITE (64*T1)."""
        return 64 * self.t1
