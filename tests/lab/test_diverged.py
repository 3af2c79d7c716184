"""Nothing acknowledged is dropped silently, on the real lab: the survivor was behind. master3 is
unplugged, the majority (master1, master2) acknowledges writes (and a delete) master3 never sees,
then loses power; master3 is plugged back and forced into a one-member cluster without them. When
master1 and master2 come back, `rejoin --all` reports, before it sets each old data dir aside,
exactly the writes the recovered cluster lacks and the key the majority deleted (count, keys, where
the data dir was kept); `diverged export` and `diverged replay --yes` put them back and carry out
the delete. (Before this, rejoin moved the data dirs aside without a word.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from etcd_dr.inventory import load_inventory
from etcd_dr.lab import lifecycle
from etcd_dr.state import client_for

from .conftest import Lab
from .test_faults import cli, wait_voters
from .test_recover import one

pytestmark = pytest.mark.lab
WRITTEN = [f"/diverged-test/k{i}" for i in range(5)]
GONE = "/diverged-test/gone"


def test_writes_the_behind_survivor_lacks_are_reported_exported_and_replayed(
    running_lab: Lab, tmp_path: Path
) -> None:
    lab = running_lab
    wait_voters(lab, 3)
    inv = load_inventory(lab.cfg.inventory_path)
    with client_for(inv) as c:
        c.put("/diverged-test/base", "before")
        c.put(GONE, "deleted by the majority after the fork")
    # master1 leads, so the majority writes at once without an election once master3 is unplugged
    with one(inv, "master1") as m1:
        me = m1.status(inv.client_url(inv.host("master1"))).member_id
    r = lab.etcdctl("move-leader", f"{me:x}")
    assert r.returncode == 0 or "already" in r.stderr, r.stderr
    try:
        assert lab.cli("unplug", "master3").returncode == 0
        majority = [inv.client_url(inv.host(h)) for h in ("master1", "master2")]
        with client_for(inv, majority) as c:
            for k in WRITTEN:
                c.put(k, f"acknowledged {k}", timeout=10.0)
            c.put("/diverged-test/base", "changed by the majority", timeout=10.0)
            assert c.delete_if_mod_revision(GONE, c.range(GONE).kvs[0].mod_revision, timeout=10.0)[0]
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "off").returncode == 0
        assert lab.cli("plug", "master3").returncode == 0
        r, _ = cli(lab, "recover", "--yes", "--json", timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "master3" in json.loads(r.stdout)["reason"]
        with one(inv, "master3") as m3:
            assert m3.range("/diverged-test/k0").count == 0  # the survivor lacks them
        for h in ("master1", "master2"):
            assert lab.cli("power", h, "on").returncode == 0

        t0 = time.monotonic()
        r, took = cli(lab, "rejoin", "--all", "--json", timeout=400)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        reps = {d["host"]: d for d in out["diverged"]}
        assert set(reps) == {"master1", "master2"}, out["diverged"]
        want = sorted([*WRITTEN, "/diverged-test/base"])
        for rep in reps.values():
            assert rep["status"] == "diverged" and rep["count"] == len(want), rep
            assert rep["keys"] == want, rep
            assert rep["deleted_keys"] == [GONE], rep
            assert rep["data_dir"].startswith(f"{inv.etcd.data_dir}.bak-"), rep
            assert rep["data_dir"] in rep["sentence"] and f"{len(want)} writes" in rep["sentence"]
            assert Path(rep["saved_to"]).is_file()
            assert json.loads(Path(rep["saved_to"]).read_text())["keys"] == want
        base = next(w for w in reps["master1"]["writes"] if w["key"] == "/diverged-test/base")
        assert base["cluster_value_differs"] and base["cluster_mod_revision"] > 0
        assert "writes the cluster lacks" in out["verdict"]
        audit = [json.loads(x) for x in inv.audit_log.read_text().splitlines()]
        assert [a["host"] for a in audit if a["action"] == "diverged.report"][-2:] == ["master1", "master2"]
        print(f"rejoin --all with the reports: {took:.1f} s ({time.monotonic() - t0:.1f} s)")

        dump = tmp_path / "m1.jsonl"
        r, took = cli(lab, "diverged", "export", "--host", "master1", "-o", str(dump), timeout=120)
        assert r.returncode == 0, r.stderr + r.stdout
        lines = [json.loads(x) for x in dump.read_text().splitlines()]
        assert sorted(x["key_text"] for x in lines if x["op"] == "put") == want
        assert [x["key_text"] for x in lines if x["op"] == "delete"] == [GONE]
        assert dump.stat().st_mode & 0o777 == 0o600  # the values are the cluster's data
        print(f"diverged export: {took:.1f} s")

        r, _ = cli(lab, "diverged", "replay", str(dump), timeout=60)
        assert r.returncode == 2 and "nothing was changed" in r.stdout, r.stdout + r.stderr
        with client_for(inv) as c:
            assert c.range("/diverged-test/k0").count == 0
        r, took = cli(lab, "diverged", "replay", str(dump), "--yes", "--json", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = json.loads(r.stdout)["rows"]
        assert {x["key"]: x["action"] for x in rows} == {**dict.fromkeys(want, "put"), GONE: "delete"}
        print(f"diverged replay: {took:.1f} s")
        with client_for(inv) as c:
            for k in WRITTEN:
                assert c.range(k).kvs[0].value == f"acknowledged {k}".encode()
            assert c.range("/diverged-test/base").kvs[0].value == b"changed by the majority"
            assert c.range(GONE).count == 0
        # a second replay finds them there: nothing to do
        r, _ = cli(lab, "diverged", "replay", str(dump), "--yes", "--json", timeout=60)
        assert r.returncode == 0
        assert {x["action"] for x in json.loads(r.stdout)["rows"]} == {"same"}
    finally:
        lifecycle.up(lab.cfg, say=print)  # other tests expect the lab as built
