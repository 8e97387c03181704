"""Network profiles of the rehearsal's control plane (between the AP and each node).

This kernel has no ``netem``, so delay, jitter and loss are played by a user-space TCP relay on
each node host (:mod:`rehearsal.relay`) and the rate by ``tbf`` on the node's LAN link:

* one-way delay: every chunk the relay reads (one ``recv``: a control message is one chunk)
  waits ``delay_s`` (uniform in ``delay_s .. delay_s + jitter_s``) before it is written on, in
  both directions. Chunks keep their order: a chunk never overtakes the one before it, as TCP
  delivers in order (a late chunk holds those behind it).
* loss: TCP hides a lost segment as a retransmission after the retransmission timeout (Linux:
  at least 200 ms); the relay plays a loss as a chunk held ``rto_s`` longer (and everything
  behind it). Chunks are judged, not packets: a chunk of many segments is "lost" at most once.
* rate: ``tbf`` at ``rate`` on the node's link, both directions (None: no limit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["NetworkProfile", "PROFILES", "LINUX_MIN_RTO_S"]

#: Linux's smallest retransmission timeout (TCP_RTO_MIN): what one lost segment costs at least.
LINUX_MIN_RTO_S = 0.2


@dataclass(frozen=True)
class NetworkProfile:
    """One network between the AP and each node (times in seconds, ``loss`` a probability per
    relayed chunk, ``rate`` a ``tc`` rate such as ``"20mbit"``)."""

    name: str
    delay_s: float
    jitter_s: float = 0.0
    loss: float = 0.0
    rto_s: float = LINUX_MIN_RTO_S
    rate: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"name: {self.name!r} must be an identifier")
        for key in ("delay_s", "jitter_s", "rto_s"):
            v = getattr(self, key)
            if not 0.0 <= v <= 10.0:
                raise ValueError(f"{key}: {v!r} must be in 0..10 s")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss: {self.loss!r} must be in [0, 1)")

    def chunk_delay(self, rng: random.Random) -> tuple[float, bool]:
        """(one-way delay of one chunk, whether it was "lost" and waited for the RTO)."""
        d = self.delay_s + (rng.uniform(0.0, self.jitter_s) if self.jitter_s else 0.0)
        lost = self.loss > 0.0 and rng.random() < self.loss
        return d + (self.rto_s if lost else 0.0), lost

    def describe(self) -> str:
        """One line: what the profile does."""
        d = f"{self.delay_s * 1e3:g}" + (f"-{(self.delay_s + self.jitter_s) * 1e3:g}" if self.jitter_s else "")
        loss = f", {self.loss * 100:g} % of chunks held {self.rto_s * 1e3:g} ms (RTO)" if self.loss else ""
        rate = f", tbf {self.rate}" if self.rate else ""
        return f"{self.name}: {d} ms one way{loss}{rate}"


PROFILES: dict[str, NetworkProfile] = {
    "lan": NetworkProfile("lan", delay_s=0.0002),
    "campus": NetworkProfile("campus", delay_s=0.005, jitter_s=0.015, loss=0.005, rate="20mbit"),
}
