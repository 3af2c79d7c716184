"""The rehearsal flow's Prefect side on a real Prefect server, with the core replaced by a canned
report (the real rehearsal, on the lab, is tests/lab/test_rehearse.py): the report becomes a markdown
artifact, and a rehearsal that is not ok fails the run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from etcd_dr.lab.config import LabConfig
from etcd_dr.lab.rehearsal.measure import AllowedLoss, analyze
from etcd_dr.lab.rehearsal.report import RecoveryFacts, RehearsalReport, judge
from etcd_dr.lab.rehearsal.run import RehearsalOptions
from etcd_dr.lab.rehearsal.scenarios import FaultPhase, Scenario
from etcd_dr.lab.rehearsal.writer import Phase, WriteRecord

T0 = 1_000_000.0


def _report(opts: RehearsalOptions, lab: LabConfig, lost: bool) -> RehearsalReport:
    log = (
        WriteRecord(0, Phase.WRITER, "/r/w/0", "a", T0 - 1, T0 - 0.99, 10, "ep"),
        WriteRecord(1, Phase.WRITER, "/r/w/1", "b", T0 + 0.1, T0 + 1.1, None, None, "no leader"),
        WriteRecord(2, Phase.WRITER, "/r/w/2", "c", T0 + 15, T0 + 15.01, 12, "ep"),
    )
    present = {"/r/w/2": "c"} if lost else {"/r/w/0": "a", "/r/w/2": "c"}
    m = analyze(log, present, fault_at=T0, fault_done_at=T0 + 1, allowed=AllowedLoss.none())
    rec = RecoveryFacts("recovered", "voter-restore", "quorum lost: ...", recovered_on="master3")
    ok, verdict = judge(opts.scenario, ("voter-restore",), rec, m, AllowedLoss.none(), None)
    fault = FaultPhase(T0, T0 + 1, ("power loss of master1",), 1.0)
    none, where = AllowedLoss.none(), {"prefix": lab.prefix}
    return RehearsalReport(opts.scenario, ok, verdict, "run", where, "restore", fault, rec, m, none)


def _artifacts(prefix: str) -> list:
    from prefect.client.orchestration import get_client

    async def read() -> list:
        async with get_client() as c:
            return await c.read_latest_artifacts()

    return [a for a in asyncio.run(read()) if (a.key or "").startswith(prefix)]


def test_report_artifact_and_a_failed_rehearsal_fails_the_run(
    prefect_harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tasks.rehearse
    from flows.rehearse import RehearsalFailed, rehearse_flow

    monkeypatch.setenv("ETCD_DR_LAB_DIR", str(tmp_path / "lab"))
    seen: list[tuple[RehearsalOptions, LabConfig]] = []

    def fake(opts: RehearsalOptions, lab: LabConfig, *, say) -> RehearsalReport:
        seen.append((opts, lab))
        say("a progress line")
        return _report(opts, lab, lost=opts.keys == 13)

    monkeypatch.setattr(tasks.rehearse, "rehearse", fake)
    out = rehearse_flow(scenario="masters-lost", lab_prefix="rhflow", lab_subnet="10.231.23.0/24")
    assert out["ok"] is True and out["rto_s"] == 15.01 and out["rpo_writes"] == 0
    opts, lab = seen[0]
    assert opts.scenario is Scenario.MASTERS_LOST and (lab.prefix, lab.subnet) == ("rhflow", "10.231.23.0/24")
    assert lab.learner_etcd is not None and lab.learner_etcd.value == "3.5"
    (art,) = _artifacts("etcd-rehearse-rhflow-masters-lost")
    assert art.description.startswith("masters-lost recovered by voter-restore on master3: RTO 15.0 s")
    assert "| RPO (acknowledged writes lost) | 0 |" in str(art.data)

    with pytest.raises(RehearsalFailed, match="1 of them where the plan may lose none"):
        rehearse_flow(scenario="masters-lost", keys=13, lab_prefix="rhflow", lab_subnet="10.231.23.0/24")

    from prefect.logging.handlers import APILogHandler

    asyncio.run(APILogHandler.aflush())  # ship the runs' logs while the test server is still up
