"""The readiness flow: run `etcd-dr check`, publish the results as a table artifact, and fail the
run when a critical check fails (so a schedule's failed run is the alert)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.inventory import ClusterInventory
from etcd_dr.errors import EtcdDrError
from etcd_dr.inventory import load_inventory
from etcd_dr.readiness import DEFAULT_DEADLINE_S, Readiness, result_word
from flows.common import audited_run
from tasks.check import readiness_check


class NotReady(EtcdDrError):
    """A critical readiness check failed."""


def _rows(r: Readiness) -> list[dict]:
    return [
        {
            "check": str(x.check),
            "host": x.host or "-",
            "result": result_word(x.ok, x.critical),
            "detail": x.detail,
            "hint": x.hint,
        }
        for x in r.results
    ]


@flow(name="etcd-check", log_prints=False)
def check_flow(
    inventory_block: str | None = None,
    inventory_path: str | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> dict:
    """Check one cluster's readiness for a disaster. Give a saved ClusterInventory block's name, or
    an inventory file path. Fails when a critical check fails; warnings only show in the artifact."""
    logger = get_run_logger()
    if not (inventory_block or inventory_path):
        raise ValueError("check_flow needs inventory_block or inventory_path")
    with audited_run():
        if inventory_block:
            with ClusterInventory.load(inventory_block).materialize() as inv:
                r = readiness_check(inv, deadline_s)
        else:
            r = readiness_check(load_inventory(inventory_path), deadline_s)
    create_table_artifact(
        key=f"etcd-check-{r.cluster}".lower().replace("_", "-").replace(".", "-"),
        table=_rows(r),
        description=f"**{r.summary}**",
    )
    for x in r.results:
        if not x.ok:
            (logger.error if x.critical else logger.warning)(
                "%s %s: %s; %s", x.check, x.host or "-", x.detail, x.hint
            )
    logger.info(r.summary)
    if not r.ok:
        raise NotReady(r.summary)
    return r.to_json()
