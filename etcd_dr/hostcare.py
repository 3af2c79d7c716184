"""Care of the hosts under etcd: their clocks (now); kubelet sandbox cleanup comes later.

Clock skew matters because certificates are judged by each host's own clock: in the source incident
a member refused a peer's certificate as "not yet valid" because its clock was behind. A host's
clock is measured over SSH against this machine's: `date +%s.%N` is bracketed by local time, the
remote reading is compared with the bracket's midpoint, and half the round trip bounds the error
(the reading was taken somewhere inside the bracket). The best of a few samples (shortest round
trip) is kept, as NTP does. Skew *between hosts* is what counts; this machine is only the ruler.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etcd_dr.errors import CommandError
from etcd_dr.executor import Executor


@dataclass(frozen=True)
class ClockSample:
    """One host's clock against this machine's, at local time `local_mid` (epoch seconds)."""

    host: str
    offset_s: float  # remote - local midpoint: > 0 when the host is ahead
    uncertainty_s: float  # half the round trip
    local_mid: float

    @property
    def host_time(self) -> dt.datetime:
        """What the host's clock read (as best known), tz-aware UTC."""
        return dt.datetime.fromtimestamp(self.local_mid + self.offset_s, dt.UTC)


def sample_from(host: str, t0: float, remote: float, t1: float) -> ClockSample:
    """Pure: a sample from local send time t0, the remote reading, and local receive time t1."""
    if t1 < t0:
        raise ValueError("the local clock went backwards during the sample")
    mid = (t0 + t1) / 2
    return ClockSample(host, remote - mid, (t1 - t0) / 2, mid)


def parse_epoch(text: str) -> float:
    """`date +%s.%N` output as seconds. Raises ValueError on anything else (a busybox `date` prints
    a literal %N: that is refused rather than read as whole seconds with no warning)."""
    s = text.strip()
    sec, _, frac = s.partition(".")
    if not sec.lstrip("-").isdigit() or not frac.isdigit():
        raise ValueError(f"not a `date +%s.%N` reading: {s[:40]!r}")
    return float(f"{sec}.{frac}")


def measure_clock(
    ex: Executor, *, samples: int = 3, timeout: float = 5.0, now: Callable[[], float] = time.time
) -> ClockSample:
    """Measure ex's host clock; keeps the sample with the shortest round trip. The first command
    opens the connection, so it is not bracketed (a connect would inflate the round trip)."""
    ex.run(["true"], timeout=timeout, reason="clock: connect")
    best: ClockSample | None = None
    for _ in range(max(1, samples)):
        t0 = now()
        r = ex.run(["date", "+%s.%N"], timeout=timeout, reason="clock: read")
        t1 = now()
        try:
            s = sample_from(ex.host, t0, parse_epoch(r.stdout), t1)
        except ValueError as e:
            raise CommandError(ex.host, r.command, r.rc, str(e)) from None
        if best is None or s.uncertainty_s < best.uncertainty_s:
            best = s
    assert best is not None
    return best


@dataclass(frozen=True)
class SkewReport:
    """How far apart the measured hosts' clocks are."""

    max_skew_s: float  # largest pairwise difference of offsets
    uncertainty_s: float  # of max_skew_s: the two hosts' uncertainties added
    ahead: str  # the host with the fastest clock
    behind: str  # the host with the slowest clock
    deviations: Mapping[str, float]  # each host's offset from the median offset

    def exceeds(self, limit_s: float) -> bool:
        """True only when the skew is over the limit even at the favourable end of its error bar."""
        return self.max_skew_s - self.uncertainty_s > limit_s

    def outliers(self, limit_s: float) -> tuple[str, ...]:
        """The hosts to blame when the skew exceeds the limit: those more than half the limit from
        the median (with three or more hosts, the odd one out; with two, both)."""
        if not self.exceeds(limit_s):
            return ()
        return tuple(h for h, d in self.deviations.items() if abs(d) > limit_s / 2)


def skew(samples: Mapping[str, ClockSample]) -> SkewReport | None:
    """Pure: the pairwise skew of the sampled hosts; None with fewer than two."""
    if len(samples) < 2:
        return None
    hi = max(samples.values(), key=lambda s: s.offset_s)
    lo = min(samples.values(), key=lambda s: s.offset_s)
    med = statistics.median(s.offset_s for s in samples.values())
    return SkewReport(
        max_skew_s=hi.offset_s - lo.offset_s,
        uncertainty_s=hi.uncertainty_s + lo.uncertainty_s,
        ahead=hi.host,
        behind=lo.host,
        deviations={h: s.offset_s - med for h, s in samples.items()},
    )
