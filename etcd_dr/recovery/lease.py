"""One recovery per cluster, wherever it is started: a lease kept on the cluster's own hosts.

A local flock and Prefect's concurrency limit only keep out recoveries started from the same
machine or the same Prefect server. Two operators with two copies of an inventory share nothing but
the cluster, so the lease lives there: a small file on each etcd host that answers SSH,
`/var/lib/etcd-dr/recover-<cluster>.lease`, holding the controller that holds it, who and what for
(user, machine, pid, incident, flow run) and its expiry on that host's own clock (so clock skew
between controllers cannot make it lapse early). Reading and writing it happens under `flock(1)` on
the host, which makes take/renew/release atomic there. The holder is the controller (this machine and
its state directory), not one run: a run that was SIGKILLed after taking the lease leaves it to the
next run from the same place (which the local flock already serializes), never blocked by its own
crash; another controller waits for the lease to be given back or to lapse.

The cluster lease is taken on every host in the inventory's order, all or nothing: two recoveries
that picked different targets still meet on the first host they share, and a fixed order means
they cannot hold half each and wait for one another.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import EtcdDrError, TransportError
from etcd_dr.executor import Executor

LEASE_DIR = "/var/lib/etcd-dr"
TTL_S = 600  # longer than any one step (a wait-healthy is at most 90 s); renewed between steps

# $1 action, $2 lease file, $3 holder id, $4 ttl, $5 owner. Prints TAKEN, HELD (then the file),
# RELEASED or NOT-HELD. The flock file beside it is never removed: a lock on a file that another
# process may unlink and recreate protects nothing.
_SCRIPT = r"""
set -eu
action=$1 f=$2 holder=$3 ttl=$4 owner=$5
mkdir -p "$(dirname "$f")"
exec 9>>"$f.flock"
flock -w 10 9 || { echo FLOCK-TIMEOUT; exit 3; }
now=$(date +%s)
cur=""; exp=0
if [ -f "$f" ]; then
  cur=$(sed -n 's/^holder=//p' "$f")
  exp=$(sed -n 's/^expires=//p' "$f")
fi
case "$exp" in ''|*[!0-9]*) exp=0 ;; esac
case "$action" in
take)
  if [ -z "$cur" ] || [ "$cur" = "$holder" ] || [ "$exp" -lt "$now" ]; then
    printf 'holder=%s\nowner=%s\nexpires=%s\ntaken=%s\n' "$holder" "$owner" "$((now + ttl))" "$now" > "$f.tmp"
    mv -f "$f.tmp" "$f"
    echo "TAKEN $cur"
  else
    echo "HELD $now"; cat "$f"
  fi ;;
release)
  if [ "$cur" = "$holder" ]; then rm -f "$f"; echo RELEASED; else echo NOT-HELD; fi ;;
esac
"""


class LeaseError(EtcdDrError):
    """The lease could not be read or written on a host (not: held by another recovery)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a host's lease, as the lease file says."""

    host: str
    holder: str  # the controller's id
    owner: str  # who and what for, as that controller wrote it
    expires_in_s: int  # by the host's clock

    @property
    def sentence(self) -> str:
        return f"{self.host} is leased to another recovery ({self.owner}) for another {self.expires_in_s} s"


def lease_path(cluster: str, base: str = LEASE_DIR) -> str:
    return f"{base}/recover-{re.sub(r'[^A-Za-z0-9_.-]', '_', cluster)}.lease"


def controller_id(state_dir: Path) -> str:
    """Who holds a lease: this machine and the directory its journals live in."""
    where = f"{socket.gethostname()}:{state_dir.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def owner_text(incident: str, run_id: str | None = None) -> str:
    """Who is recovering and what for, for the operator who finds the lease taken (no secret)."""
    who = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}, incident {incident}"
    return re.sub(r"[\r\n]", " ", f"{who}, flow run {run_id}" if run_id else who)


def _call(
    ex: Executor, action: str, cluster: str, holder: str, owner: str, ttl_s: int, base: str
) -> list[str]:
    path = lease_path(cluster, base)
    argv = ["sh", "-c", _SCRIPT, "etcd-dr-lease", action, path, holder, str(ttl_s), owner]
    r = ex.run(argv, timeout=20, check=False, reason=f"recovery lease: {action}")
    lines = r.stdout.splitlines()
    if r.rc != 0 or not lines:
        raise LeaseError(
            f"{ex.host}: recovery lease {path}, {action} failed "
            f"(rc {r.rc}: {(r.stderr or r.stdout).strip()[:200]}); "
            f"it needs flock(1) and a writable {base} on the host"
        )
    return lines


def take(
    ex: Executor, cluster: str, holder: str, owner: str, ttl_s: int = TTL_S, base: str = LEASE_DIR
) -> Holder | None:
    """Take (or renew) the lease on one host for `holder`: None when it is its now, else who has it."""
    lines = _call(ex, "take", cluster, holder, owner, ttl_s, base)
    if lines[0].startswith("TAKEN"):
        return None
    if not lines[0].startswith("HELD"):
        raise LeaseError(f"{ex.host}: unexpected answer from the recovery lease: {lines[0][:100]}")
    now = int(lines[0].split()[1])
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    exp = fields.get("expires", "")
    left = int(exp) - now if exp.isdigit() else 0
    return Holder(ex.host, fields.get("holder", "?"), fields.get("owner", "?"), max(0, left))


def release(ex: Executor, cluster: str, holder: str, base: str = LEASE_DIR) -> bool:
    """Give the lease back if `holder` has it; True when it had."""
    return _call(ex, "release", cluster, holder, "-", 0, base)[0] == "RELEASED"


class ClusterLease:
    """The lease on every reachable host of a cluster, taken all or nothing (see the module doc).

    `acquire()` returns None when held, else the Holder that keeps this recovery out (what it took
    is given back first). Hosts that do not answer SSH are skipped, except `required` ones (the
    plan's target: its steps need it anyway): their transport error is raised."""

    def __init__(
        self,
        cluster: str,
        holder: str,
        hosts: Sequence[str],
        executor: Callable[[str], Executor],
        *,
        required: Sequence[str] = (),
        owner: str = "",
        ttl_s: int = TTL_S,
        base: str = LEASE_DIR,
    ) -> None:
        self.cluster, self.holder, self.hosts = cluster, holder, list(hosts)
        self.executor, self.required = executor, set(required)
        self.owner = owner or holder
        self.ttl_s, self.base = ttl_s, base
        self.held: list[str] = []
        self.skipped: dict[str, str] = {}  # host -> why it holds no lease
        self._taken_at = 0.0

    def acquire(self) -> Holder | None:
        for h in self.hosts:
            try:
                holder = take(self.executor(h), self.cluster, self.holder, self.owner, self.ttl_s, self.base)
            except TransportError as e:
                if h in self.required:
                    self.release()
                    raise
                self.skipped[h] = str(e)
                continue
            except EtcdDrError:
                self.release()
                raise
            if holder is not None:
                self.release()
                return holder
            self.held.append(h)
        self._taken_at = time.monotonic()
        return None

    def renew_if_due(self) -> None:
        """Renew when half the lease has run out (between steps: one SSH command per host)."""
        if self.held and time.monotonic() - self._taken_at > self.ttl_s / 2:
            for h in self.held:
                holder = take(self.executor(h), self.cluster, self.holder, self.owner, self.ttl_s, self.base)
                if holder is not None:  # only after it expired: someone else took it over
                    raise LeaseError(f"the recovery lease was lost: {holder.sentence}")
            self._taken_at = time.monotonic()

    def release(self) -> None:
        """Best effort: a lease that cannot be given back lapses at its expiry."""
        for h in self.held:
            try:
                release(self.executor(h), self.cluster, self.holder, self.base)
            except EtcdDrError as e:
                self.skipped[h] = f"not released ({e}); it lapses in at most {self.ttl_s} s"
        self.held = []
