"""The alert receiver over real HTTP, in front of a real Prefect server started by `etcd-dr server`:
auth (bearer or HMAC), validation naming the field, the body cap, 50 identical alerts within 5 s give
one recover run, an unknown cluster is answered 200 and ignored, a resolved alert cancels the run of
its incident that still waits. And the recovery's limit is per cluster: with alpha's slot held,
alpha's recover run finds it taken and does nothing, beta's runs at once."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from console.receiver import SIGNATURE_HEADER, signature
from tests.conftest import drain_events_worker
from tests.console.conftest import TOKEN, Console

pytestmark = pytest.mark.server  # each starts `etcd-dr server`: not in the quick loop

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def alert(name: str, cluster: str, status: str = "firing", fp: str = "fp-1") -> dict:
    return {"status": status, "labels": {"alertname": name, "cluster": cluster, "instance": "m1"},
            "annotations": {"summary": "$(touch /tmp/pwned) `id`"}, "startsAt": "2026-12-05T19:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": fp}  # fmt: skip


def body(*alerts: dict, status: str = "firing") -> bytes:
    return json.dumps({"version": "4", "status": status, "receiver": "etcd-dr", "groupKey": "{}:{}",
                       "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://am", "alerts": list(alerts)}).encode()  # fmt: skip


def post(c: Console, raw: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{c.receiver}/alerts/alertmanager", content=raw, headers=headers or BEARER, timeout=30)


def runs_of(c: Console, cluster: str) -> list[dict]:
    return [r for r in c.flow_runs("recover") if r["parameters"].get("cluster") == cluster]


def wait_for(what, timeout: float = 60.0, every: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if v := what():
            return v
        time.sleep(every)
    return what()


def test_auth_bearer_or_hmac_else_401(console: Console) -> None:
    raw = body(alert("Watchdog", "alpha"))  # not a watched alert: nothing opens
    assert post(console, raw, {"Content-Type": "application/json"}).status_code == 401
    assert post(console, raw, {"Authorization": "Bearer wrong"}).status_code == 401
    assert post(console, raw, {"Authorization": f"Basic {TOKEN}"}).status_code == 401
    r = post(console, raw, {SIGNATURE_HEADER: signature("wrong", raw)})
    assert r.status_code == 401 and TOKEN not in r.text
    assert post(console, raw, {SIGNATURE_HEADER: signature(TOKEN, raw)}).status_code == 200
    assert post(console, raw, {SIGNATURE_HEADER: signature(TOKEN, raw + b" ")}).status_code == 401
    ok = post(console, raw)
    assert ok.status_code == 200 and ok.json() == {"incidents": [], "ignored": []}


def test_validation_names_the_field_and_the_body_is_capped(console: Console) -> None:
    r = post(console, body({"status": "firing", "labels": {"cluster": "alpha"}}))
    assert r.status_code == 422 and r.json()["error"].startswith("alerts[0].labels.alertname: missing")
    r = post(console, b'{"version": "4", "status": "firing", "alerts": {}}')
    assert r.status_code == 422 and "alerts: expected list" in r.json()["error"]
    assert post(console, b"nope").status_code == 400
    assert post(console, body(), {**BEARER, "Content-Type": "text/plain"}).status_code == 415
    big = body(*[alert("Watchdog", "alpha", fp=str(i)) for i in range(6000)])
    assert len(big) > 1 << 20
    t0 = time.monotonic()
    r = post(console, big)
    assert r.status_code == 413 and "byte cap" in r.text, r.text
    assert time.monotonic() - t0 < 5
    assert httpx.get(f"{console.receiver}/healthz").json() == {"ok": True}


def test_an_unknown_cluster_is_answered_200_and_ignored(console: Console) -> None:
    before = len(console.flow_runs("recover"))
    r = post(console, body(alert("etcdNoLeader", "gamma"), alert("etcdNoLeader", "$(reboot)", fp="x")))
    assert r.status_code == 200, r.text
    assert r.json()["incidents"] == []
    assert r.json()["ignored"] == [
        "etcdNoLeader: cluster='gamma' is no served cluster",
        "etcdNoLeader: cluster='$(reboot)' is no served cluster",
    ]
    time.sleep(5)  # an automation would have started a run by now
    assert len(console.flow_runs("recover")) == before


def test_fifty_identical_alerts_within_5_s_give_one_run(console: Console) -> None:
    raw = body(alert("etcdNoLeader", "alpha", fp="burst"), alert("etcdInsufficientMembers", "alpha", fp="b2"))
    url = f"{console.receiver}/alerts/alertmanager"
    t0 = time.monotonic()
    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: http.post(url, content=raw, headers=BEARER), range(50)))
    took = time.monotonic() - t0
    assert took < 5, took
    assert [a.status_code for a in answers] == [200] * 50
    opened = [i for a in answers for i in a.json()["incidents"]]
    assert len(opened) == 1 and opened[0]["cluster"] == "alpha", opened
    incident = opened[0]["incident"]
    run = wait_for(
        lambda: [r for r in runs_of(console, "alpha") if r["parameters"].get("incident") == incident]
    )
    assert len(run) == 1, run
    # alpha's inventory says automatic_recovery: the automation asked for no approval
    assert run[0]["parameters"]["approve"] is True
    time.sleep(5)  # the triggers service has long seen every event: still one run
    assert len([r for r in runs_of(console, "alpha") if r["parameters"].get("incident") == incident]) == 1
    # the alert's annotations (shell text) reach no run's parameters
    assert "pwned" not in json.dumps(run[0]["parameters"])
    print(f"\n50 alerts in {took:.2f} s, one incident, one run")


def test_a_resolved_alert_cancels_the_run_still_waiting(console: Console) -> None:
    r = post(console, body(alert("etcdMembersDown", "beta", fp="res")))
    (opened,) = r.json()["incidents"]
    incident = opened["incident"]
    started = wait_for(
        lambda: [x for x in runs_of(console, "beta") if x["parameters"].get("incident") == incident]
    )
    assert started and started[0]["parameters"]["approve"] is False  # beta: the approval form
    # a run of this incident that has not started yet (scheduled an hour ahead), and one of another
    dep = console.deployments()["recover"]["id"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    def scheduled(inc: str) -> str:
        return console.post(f"/deployments/{dep}/create_flow_run", {  # type: ignore[index]
            "parameters": {"cluster": "beta", "incident": inc},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
        })["id"]  # fmt: skip

    mine, other = scheduled(incident), scheduled("another-incident")
    r = post(console, body(alert("etcdMembersDown", "beta", status="resolved", fp="res"), status="resolved"))
    assert r.json()["incidents"] == [{"cluster": "beta", "incident": incident, "change": "resolved"}]

    def state(run: str) -> str:
        return console.get(f"/flow_runs/{run}")["state"]["type"]  # type: ignore[index]

    assert wait_for(lambda: state(mine) == "CANCELLED", 30), state(mine)
    assert state(other) == "SCHEDULED"
    msg = console.get(f"/flow_runs/{mine}")["state"]["message"]  # type: ignore[index]
    assert "resolved before anyone approved" in msg, msg


def test_a_run_whose_incident_resolved_before_it_started_does_nothing(console: Console) -> None:
    """The receiver cancels the runs that exist when the alert resolves; a run the automation makes
    a moment later finds its incident closed in the receiver's file and ends Cancelled at once."""
    dep = console.deployments()["recover"]["id"]
    run = console.post(f"/deployments/{dep}/create_flow_run",
                       {"parameters": {"cluster": "beta", "incident": "resolved-already"}})["id"]  # type: ignore[index]  # fmt: skip

    def final() -> dict | None:
        s = console.get(f"/flow_runs/{run}")["state"]  # type: ignore[index]
        return s if s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") else None

    state = wait_for(final, 120)
    assert state and state["type"] == "CANCELLED", state
    assert "resolved before this run started; nothing was done" in state["message"], state


def test_the_recovery_limit_is_per_cluster(console: Console) -> None:
    """alpha's slot held (as a first recovery of alpha would hold it): a second alpha run fails having
    done nothing, while beta's run goes ahead at the same time (and ends on the core's refusal)."""
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL, temporary_settings

    dep = console.deployments()["recover"]["id"]
    with (
        temporary_settings({PREFECT_API_URL: console.api}),
        concurrency("recover-alpha", occupy=1, strict=True),
    ):
        ids = {
            cl: console.post(f"/deployments/{dep}/create_flow_run",
                             {"parameters": {"cluster": cl, "slot_wait_s": 3}})["id"]  # type: ignore[index]
            for cl in ("alpha", "beta")
        }  # fmt: skip

        def final(run: str) -> dict | None:
            s = console.get(f"/flow_runs/{run}")["state"]  # type: ignore[index]
            return s if s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") else None

        a = wait_for(lambda: final(ids["alpha"]), 120)
        b = wait_for(lambda: final(ids["beta"]), 120)
    drain_events_worker()
    assert a and a["type"] == "FAILED", a
    assert a["message"].startswith(
        "another recovery of cluster alpha holds the concurrency slot recover-alpha"
    )
    assert b and b["type"] == "FAILED" and "concurrency slot" not in b["message"], b
    assert "refused" in b["message"], b  # beta's recovery ran: the core refused (no host answers)


def test_each_served_flow_runs_for_a_cluster_by_name(console: Console) -> None:
    """The wrappers find the inventory by name and run the project's flow: status observes (quorum
    lost: nothing answers) and completes; check and snapshot fail on the core's own verdict, rejoin's
    dry run ends with its plan; never a parameter or import error, each run named by its cluster."""
    deps = console.deployments()
    runs = {
        name: console.post(f"/deployments/{deps[name]['id']}/create_flow_run",  # type: ignore[index]
                           {"parameters": {"cluster": "beta", **params}})["id"]
        for name, params in (("status", {"check_ssh": False}), ("check", {"deadline_s": 5}),
                             ("rejoin", {"dry_run": True}), ("snapshot", {}))
    }  # fmt: skip

    def final(run: str) -> dict | None:
        s = console.get(f"/flow_runs/{run}")["state"]  # type: ignore[index]
        return s if s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") else None

    states = {name: wait_for(lambda r=run: final(r), 180) for name, run in runs.items()}
    assert states["status"] and states["status"]["type"] == "COMPLETED", states["status"]
    for name in ("check", "rejoin", "snapshot"):
        st = states[name]
        # rejoin's dry run: a plan, whatever the core makes of a cluster that does not answer
        assert st and st["type"] in (("FAILED", "COMPLETED") if name == "rejoin" else ("FAILED",)), (name, st)
        assert not any(w in (st["message"] or "") for w in ("TypeError", "ImportError", "parameter")), (
            name,
            st,
        )
    names = {console.get(f"/flow_runs/{r}")["name"] for r in runs.values()}  # type: ignore[index]
    assert names == {"status-beta", "check-beta", "rejoin-beta", "snapshot-beta"}, names


def test_metrics_on_the_receiver_port(console: Console) -> None:
    """Last in the module: the runs the tests above made are counted."""
    r = httpx.get(f"{console.receiver}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    text = r.text
    assert 'etcd_dr_snapshot_verified{cluster="alpha"} 0' in text  # nothing ever snapshotted them
    assert 'etcd_dr_snapshot_verified{cluster="beta"} 0' in text
    failed = re.search(r'etcd_dr_recoveries\{cluster="alpha",state="failed"\} (\d+)', text)
    assert failed and int(failed.group(1)) >= 1, text  # the alert's run and the one that found the slot taken
    assert re.search(r'etcd_dr_recoveries\{cluster="beta",state="cancelled"\} [1-9]', text), text
    assert re.search(r'etcd_dr_receiver_requests_total\{result="refused"\} [1-9]', text), text
    assert 'etcd_dr_incidents_open{cluster="beta"} 0' in text
    assert "etcd_dr_metric_errors" not in text, text
    assert TOKEN not in text
