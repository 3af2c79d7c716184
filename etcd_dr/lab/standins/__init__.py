"""STAND-INS on the lab's hosts for what cannot run there for real (DESIGN: "a stand-in is used only
where the real program cannot run here, is named as such, and checks what it is given as the real
one would"). Each file they install says STAND-IN in its first lines.

- `chronyc`: the lab's hosts share the machine's kernel clock and cannot set it (CAP_SYS_TIME is
  dropped on purpose), so a clock step cannot be real. The stand-in records every call in
  /var/log/etcd-dr/chronyc.standin.log and answers as chronyc does; `makestep` zeroes the host's
  simulated offset (below).
- a simulated clock offset (`skew_clock`): a stand-in `date` in /usr/local/bin (ahead of /usr/bin on
  sshd's PATH) that reads /etc/etcd-dr/standin-clock-offset. What etcd-dr measures a clock with is
  `date +%s.%N` over SSH, so that is what a skewed host shows; Go programs (etcd, docker) still see
  the real clock, which is why "certificate not yet valid" is made with the certificate instead.

For an RKE cluster (etcd_dr.lab.kube installs them; README "The lab as RKE left it, and its stand-ins"):
- `rke` on the deploy host (node2): scripts for the host's own python3 (standard library, PyYAML and
  cryptography from Debian's packages) in /opt/etcd-dr-standins/{rke,etcdgw}.py, `/usr/local/bin/rke`;
- `kube-apiserver`: its scripts in /opt/etcd-dr-standins on each controlplane host, run by the
  stand-in rke (and by `lab up`) as the container `kube-apiserver`, RKE's name, from the lab's
  stand-in image (etcd_dr.lab.kubelet's: the host's /usr mounted read-only gives it python3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources

from etcd_dr.executor import Executor
from etcd_dr.lab.standins.rke import APISERVER_SCRIPTS, SCRIPTS_DIR

CHRONYC = "/usr/local/bin/chronyc"
CHRONYC_LOG = "/var/log/etcd-dr/chronyc.standin.log"
DATE = "/usr/local/bin/date"
OFFSET_FILE = "/etc/etcd-dr/standin-clock-offset"

CHRONYC_SCRIPT = f"""#!/bin/sh
# STAND-IN chronyc from etcd-dr's lab (etcd_dr/lab/standins/__init__.py): the lab's hosts share the machine's
# kernel clock, so no step can be real here. Records what it was asked; `makestep` zeroes the host's
# simulated offset ({OFFSET_FILE}, read by the stand-in date).
mkdir -p /var/log/etcd-dr
echo "$(/usr/bin/date -u +%Y-%m-%dT%H:%M:%S.%NZ) chronyc $*" >> {CHRONYC_LOG}
case "$1" in
  makestep) [ -f {OFFSET_FILE} ] && echo 0 > {OFFSET_FILE}; echo "200 OK" ;;
  tracking) echo "Reference ID    : 7F7F0101 (lab stand-in)"; echo "System time     : 0.000000000 seconds" ;;
  *) echo "501 Not authorised" >&2; exit 1 ;;
esac
""".encode()

DATE_SCRIPT = f"""#!/bin/sh
# STAND-IN date(1) from etcd-dr's lab (etcd_dr/lab/standins/__init__.py): the host's simulated clock, the real
# one plus the seconds in {OFFSET_FILE} (the lab's hosts cannot have a clock of their own).
off=$(cat {OFFSET_FILE} 2>/dev/null || echo 0)
exec /usr/bin/date -d "$off seconds" "$@"
""".encode()


def install_chronyc(ex: Executor) -> None:
    """The chronyc stand-in on one host (lab up does it on every host)."""
    ex.put(CHRONYC_SCRIPT, CHRONYC, mode=0o755, reason="lab: install the chronyc STAND-IN")


def skew_clock(ex: Executor, seconds: float) -> None:
    """Make the host's clock read `seconds` ahead (negative: behind) for what measures it over SSH."""
    ex.run(["mkdir", "-p", "/etc/etcd-dr"], reason="lab: directory for the simulated clock offset")
    ex.put(f"{seconds:g}\n".encode(), OFFSET_FILE, mode=0o644, reason="lab: simulated clock offset")
    ex.put(DATE_SCRIPT, DATE, mode=0o755, reason="lab: install the date STAND-IN (simulated clock)")


def chronyc_calls(ex: Executor) -> list[str]:
    """What the chronyc stand-in on the host was asked, one line per call."""
    r = ex.run(["cat", CHRONYC_LOG], check=False)
    return [ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if " " in ln] if r.ok else []


def provision(exs: Mapping[str, Executor], say: Callable[[str], None]) -> None:
    """Every stand-in on every host (lab up)."""
    from etcd_dr.lab import kubelet

    for ex in exs.values():
        install_chronyc(ex)
    say(f"stand-ins on every host: {CHRONYC}")
    kubelet.start_all(exs, say)


# --- RKE's rke and kube-apiserver ------------------------------------------------------------

REMOTE_DIR = SCRIPTS_DIR
RKE_BIN = "/usr/local/bin/rke"


def _source(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def install_scripts(ex: Executor, names: tuple[str, ...]) -> None:
    """Stand-in scripts (this package's files) in REMOTE_DIR on a host."""
    ex.run(["mkdir", "-p", REMOTE_DIR])
    for name in names:
        ex.put(_source(name), f"{REMOTE_DIR}/{name}", mode=0o644, reason=f"install the stand-in {name}")


def install_rke(ex: Executor) -> None:
    """The stand-in rke on a host (the deploy host): its scripts (with kube-apiserver's, which it
    puts on each controlplane node) and the `rke` command."""
    install_scripts(ex, ("rke.py", *APISERVER_SCRIPTS))
    wrapper = (
        f'#!/bin/sh\n# etcd-dr lab: STAND-IN for RKE\'s rke\nexec /usr/bin/python3 {REMOTE_DIR}/rke.py "$@"\n'
    )
    ex.put(wrapper.encode(), RKE_BIN, mode=0o755, reason="install the stand-in rke")
