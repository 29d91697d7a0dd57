"""What a mount costs per pass or epoch: its CPU seconds, the requests at the relay, its counters.

A `Meter` reads, at one instant, the mount process's user + system CPU
(/proc/PID/stat, all its threads), the latency relay's counters (connections,
object GETs, listings, HEADs, bytes each way) and objmount's own counters (the
root xattr user.objmount.stats); `Usage` is the difference of two readings.
Shared by every harness, so CPU per file means the same thing everywhere.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from bench import procs
from bench.relay import RelayProcess


@dataclass
class Reading:
    cpu_s: float | None
    relay: dict[str, int]
    stats: dict[str, int]


@dataclass
class Usage:
    """Differences between two readings: CPU seconds, relay counters, objmount counters."""

    cpu_s: float | None = None
    relay: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def cpu_ms_per(self, items: float) -> float | None:
        """Milliseconds of the mount's CPU per item (file, op, MB), or None."""
        if self.cpu_s is None or items <= 0:
            return None
        return self.cpu_s * 1e3 / items


class Meter:
    """Reads one mount's CPU, the relay's counters and objmount's stats (each may be absent)."""

    def __init__(self, pid: int | None = None, relay: RelayProcess | None = None,
                 stats: Callable[[], dict[str, int]] | None = None) -> None:
        self.pid = pid
        self.relay = relay
        self.stats = stats

    def read(self) -> Reading:
        return Reading(procs.cpu_seconds(self.pid) if self.pid else None,
                       self.relay.counters() if self.relay else {},
                       self.stats() if self.stats else {})

    @staticmethod
    def between(before: Reading, after: Reading) -> Usage:
        cpu = (after.cpu_s - before.cpu_s
               if after.cpu_s is not None and before.cpu_s is not None else None)
        return Usage(cpu, _minus(after.relay, before.relay), _minus(after.stats, before.stats))


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    # Gauges (buffer bytes) become differences too; only counters are read from them.
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int | float)}
