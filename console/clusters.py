"""The clusters a console serves: one inventory per cluster in one directory. Plain Python (no
Prefect), so the server, the receiver and the flows (in their own processes) read the same map."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import InputError
from etcd_dr.inventory import Inventory, InventoryError, load_inventory

#: The inventories directory, handed by `etcd-dr server` to every flow run it starts (they inherit
#: its environment): a flow takes the cluster by name and finds its inventory here.
INVENTORIES_ENV = "ETCD_DR_INVENTORIES"
#: The server's data directory (the receiver's open incidents are there), for the same runs.
DATA_ENV = "ETCD_DR_SERVER_DATA"


@dataclass(frozen=True)
class Cluster:
    name: str
    path: Path
    rehearsal: bool
    automatic_recovery: bool


def inventory_files(d: Path) -> list[Path]:
    """`<dir>/*.yaml|*.yml`, and `<dir>/<sub>/inventory.yaml` (a cluster with its keys beside it)."""
    files = [p for p in d.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")]
    files += [p / "inventory.yaml" for p in d.iterdir() if p.is_dir() and (p / "inventory.yaml").is_file()]
    return sorted(files)


def load_clusters(d: str | Path) -> dict[str, Cluster]:
    """Every inventory in `d`, by cluster name. Every problem of every file is reported at once
    (InputError naming the file and the fix); two files naming one cluster are refused, since a lock,
    a journal and an alert all go by the name."""
    d = Path(d).expanduser().absolute()
    if not d.is_dir():
        raise InputError(f"--inventories {d}: not a directory; give the directory of inventory files")
    found: dict[str, Cluster] = {}
    problems: list[str] = []
    for f in inventory_files(d):
        try:
            inv: Inventory = load_inventory(f)
        except InventoryError as e:
            problems.append(str(e))
            continue
        if inv.cluster in found:
            problems.append(
                f"{f}: cluster {inv.cluster!r} is also {found[inv.cluster].path}; one inventory per "
                "cluster: rename one `cluster:` or move one file out"
            )
            continue
        found[inv.cluster] = Cluster(inv.cluster, f, inv.rehearsal, inv.automatic_recovery)
    if problems:
        raise InputError("\n".join(problems))
    if not found:
        raise InputError(
            f"--inventories {d}: no inventory (*.yaml, *.yml or <dir>/inventory.yaml); put one file per "
            "cluster there (`etcd-dr inventory check -i FILE` checks one)"
        )
    return dict(sorted(found.items()))


def inventory_path(cluster: str, d: str | Path | None = None) -> Path:
    """The inventory file of `cluster` in the served directory ($ETCD_DR_INVENTORIES)."""
    d = d or os.environ.get(INVENTORIES_ENV)
    if not d:
        raise InputError(
            f"cluster {cluster!r}: ${INVENTORIES_ENV} is not set; run the flow from etcd-dr server"
        )
    clusters = load_clusters(d)
    if cluster not in clusters:
        raise InputError(
            f"cluster: {cluster!r} is not one of {', '.join(clusters)} (the inventories in {d}); pick one"
        )
    return clusters[cluster].path
