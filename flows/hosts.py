"""The hosts' clocks and certificates as a flow: `etcd-dr hosts clock` on a schedule. A table artifact
(one row per host, one per flagged certificate) and a failed run when a clock is off or a
certificate is not valid on its host's clock, so that the schedule's failed run is the alert (the
source incident's `x509: certificate has expired or is not yet valid` found before etcd restarts)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from etcd_dr.errors import EtcdDrError
from etcd_dr.hostrepair.clock import ClockReport
from flows.common import audited_run, cluster_inventory
from tasks.hosts import hosts_clock


class ClockTrouble(EtcdDrError):
    """A host's clock is off, or a certificate is not valid on its host's clock."""


def _rows(rep: ClockReport) -> list[dict]:
    rows = [
        {
            "host": h.host,
            "what": "clock",
            "result": str(h.verdict),
            "detail": h.sentence,
            "fix": "`etcd-dr hosts clock --sync`" if h.verdict == "skewed" else "",
        }
        for h in rep.hosts
    ]
    rows += [
        {
            "host": c.host,
            "what": c.path,
            "result": str(c.verdict),
            "detail": c.problem or "",
            "fix": c.fix or "",
        }
        for c in rep.bad_certs
    ]
    return rows


@flow(name="etcd-hosts-clock", log_prints=False)
def hosts_clock_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    sync: bool = False,
    ntp_server: str | None = None,
) -> dict:
    """Measure every host's clock and judge every certificate by it; with sync, step the flagged
    clocks and measure again. Fails when anything is still flagged."""
    logger = get_run_logger()
    with audited_run(), cluster_inventory(inventory_block, inventory_path, "hosts_clock_flow") as inv:
        rep = hosts_clock(inv, sync, ntp_server)
    final = rep.after or rep
    create_table_artifact(
        key=f"etcd-hosts-clock-{rep.cluster}".lower().replace("_", "-").replace(".", "-"),
        table=_rows(final),
        description=f"**{final.verdict}**",
    )
    for s in rep.synced:
        (logger.info if s.ok else logger.error)("sync: %s", s.sentence)
    logger.info(final.verdict)
    if not rep.ok:
        raise ClockTrouble(final.verdict)
    return rep.to_json()
