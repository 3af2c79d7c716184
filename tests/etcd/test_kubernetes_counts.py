"""`etcd-dr kubernetes counts --record` (etcd_dr.kubernetes.run.count_objects) on a real TLS etcd
cluster: the objects under /registry per resource prefix, recorded in the state directory where
restore-kubernetes' API check reads them; a different earlier record is moved aside, not lost."""

from __future__ import annotations

import json
from pathlib import Path

from etcd_dr.etcd.localcluster import LocalCluster
from etcd_dr.inventory import load_inventory
from etcd_dr.kubernetes.run import count_objects, counts_path, expected_counts
from tests.unit.inventory_sample import VALID, write_invdir


def test_counts_recorded_where_the_api_check_reads_them(cluster: LocalCluster, tmp_path: Path) -> None:
    d = write_invdir(tmp_path)
    (d / "inventory.yaml").write_text(VALID)
    inv = load_inventory(d / "inventory.yaml")
    with cluster.client() as c:
        for key in ("/registry/pods/default/a", "/registry/pods/default/b", "/registry/secrets/x/y"):
            c.put(key, "{}")
        c.put("/other/key", "not Kubernetes'")
        seen = count_objects(inv, record=False, client=c)
        assert seen.counts["/registry/pods/"] >= 2 and "/other/" not in json.dumps(seen.counts)
        assert seen.recorded is None and not counts_path(inv).exists()
        first = count_objects(inv, record=True, client=c)
        assert first.recorded == counts_path(inv) == d / "registry-counts.json"
        assert expected_counts(inv, [])[0] == first.counts  # what restore-kubernetes compares against
        c.put("/registry/pods/default/c", "{}")
        second = count_objects(inv, record=True, client=c)
    assert second.counts["/registry/pods/"] == first.counts["/registry/pods/"] + 1
    assert second.moved_aside is not None and json.loads(second.moved_aside.read_text()) == first.counts
    assert json.loads(counts_path(inv).read_text()) == second.counts
