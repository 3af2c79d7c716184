"""What is known of a lost voter: whether it is fenced (out of the old cluster on positive evidence)
and what the partition probe saw. Plain data, shared by the recovery planner (etcd_dr.recovery.plan),
the evidence gathering (etcd_dr.recovery.fencing) and the recovery steps (etcd_dr.recovery.steps), which
import it from here so that none of them imports another for it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FenceKind(enum.StrEnum):
    """How a voter is known to be out of the old cluster: positive evidence only. Silence (no answer,
    a timeout) is not among them: a partitioned majority is silent too, and forking it loses what it
    acknowledged."""

    STOPPED = "stopped"  # its etcd is not running and will not start again (checked over SSH)
    POWER_OFF = "power-off"  # a power driver says it is off
    ATTESTED = "attested"  # an operator's explicit, recorded word that it is down
    # its etcd runs but, asked on its own host, knows no leader: the plan stops it for good first
    # (asking again just before), and the fence check then finds it STOPPED
    TO_STOP = "to-stop"
    ALIVE = "alive"  # its etcd, asked on its own host, follows a leader: a partition, never fenced
    NONE = "none"  # no evidence: not fenced


FENCED = frozenset({FenceKind.STOPPED, FenceKind.POWER_OFF, FenceKind.ATTESTED})


@dataclass(frozen=True)
class FenceEvidence:
    """Whether a voter can no longer take part in the old cluster, and how that is known (fenced) or
    how to make it so (not fenced): one sentence either way. `by`: who attested (ATTESTED)."""

    host: str
    kind: FenceKind
    how: str
    by: str | None = None

    @property
    def fenced(self) -> bool:
        return self.kind in FENCED

    @property
    def settled(self) -> bool:
        """Fenced, or fenced by the plan itself (its stop step): nothing an operator must add."""
        return self.fenced or self.kind is FenceKind.TO_STOP


THIS_MACHINE = "this machine"


@dataclass(frozen=True)
class Sighting:
    """A lost voter answered: `seen_from` (an inventory host, or this machine) reached `host` on `port`."""

    seen_from: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.seen_from} reaches {self.host} on {self.port}"


@dataclass(frozen=True)
class Probe:
    """The partition probe: who tried the voters' client and peer ports (`probers`: the hosts that ran
    it, this machine included) and every answer they got."""

    probers: tuple[str, ...] = ()
    sightings: tuple[Sighting, ...] = ()


NO_PROBE = Probe()
