"""The readiness check's pure parts on fixtures: certificate windows against a host's clock, clock
skew math, free-disk math, learner lag, snapshot age, alarms, the deadline runner, the CLI's input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from pathlib import Path

import pytest

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.cli import main
from etcd_dr.errors import HostKeyError, TransportError
from etcd_dr.etcd.client import Alarm, EndpointStatus
from etcd_dr.hostcare import parse_epoch, sample_from, skew
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.readiness import Check, Failed, Gathered, assess
from etcd_dr.readiness.evaluate import (
    evaluate_alarms,
    evaluate_cert,
    evaluate_clocks,
    evaluate_disk,
    evaluate_learner,
    evaluate_quorum,
    evaluate_snapshot,
    go_time,
    learner_lag,
    parse_df,
)
from etcd_dr.readiness.gather import read_certs, run_all
from etcd_dr.readiness.model import CertFile, CertKind, DiskFree, FailCause
from etcd_dr.snapshots import SnapshotRecord, Verdict
from etcd_dr.state import ClusterSide, ClusterState, MemberListSource, MemberState, Reach

NOW = dt.datetime(2026, 6, 1, 4, 49, 1, tzinfo=dt.UTC)
CA = new_ca()
PATH = "/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem"


def cert_file(pem: bytes | None, kind: CertKind = CertKind.MEMBER) -> CertFile:
    return CertFile("master1", kind, PATH, pem, None if pem else "No such file")


# -- certificates ---------------------------------------------------------------------------------


def test_a_certificate_not_yet_valid_on_the_host_is_critical_in_go_x509_words() -> None:
    nb = NOW + dt.timedelta(hours=8, minutes=4, seconds=49)
    pem = issue_cert(CA, "m1", not_before=nb).cert_pem
    r = evaluate_cert(cert_file(pem), NOW, 30, ca=CA.certificate())
    assert not r.ok and r.critical and r.check is Check.CERT and r.host == "master1"
    assert r.detail == (
        "kube-etcd-10-9-0-11.pem: x509: certificate has expired or is not yet valid: "
        "current time 2026-06-01T04:49:01Z is before 2026-06-01T12:53:50Z"
    )
    assert "sync it" in r.hint and "re-issue" in r.hint and "8.1 h" in r.hint


def test_the_same_certificate_is_fine_on_a_host_whose_clock_is_right() -> None:
    pem = issue_cert(CA, "m1", not_before=NOW - dt.timedelta(minutes=5), days=365).cert_pem
    r = evaluate_cert(cert_file(pem), NOW + dt.timedelta(days=1), 30, ca=CA.certificate())
    assert r.ok and "expires in 364.0 days" in r.detail


def test_an_expired_certificate_is_critical_and_one_expiring_soon_is_a_warning() -> None:
    pem = issue_cert(CA, "m1", not_before=NOW - dt.timedelta(days=10), days=30).cert_pem
    soon = evaluate_cert(cert_file(pem), NOW, 30)
    assert not soon.ok and not soon.critical
    assert re.search(
        r"expires in 20\.0 days, on \S+Z \(host clock 2026-06-01T04:49:01Z\): under 30 days", soon.detail
    )
    assert "renew it before then" in soon.hint
    late = NOW + dt.timedelta(days=25)
    gone = evaluate_cert(cert_file(pem), late, 30)
    assert not gone.ok and gone.critical
    assert gone.detail.endswith(f"current time {go_time(late)} is after 2026-06-21T04:49:01Z")
    assert evaluate_cert(cert_file(pem), NOW, 19).ok  # the threshold is the inventory's


def test_a_member_certificate_from_another_ca_or_unreadable_is_critical() -> None:
    pem = issue_cert(new_ca(), "m1").cert_pem
    r = evaluate_cert(cert_file(pem), dt.datetime.now(dt.UTC), 30, ca=CA.certificate())
    assert not r.ok and r.critical and "not signed by the kube-ca.pem on master1" in r.detail
    r = evaluate_cert(cert_file(None), NOW, 30)
    assert not r.ok and r.critical and "cannot be read (No such file)" in r.detail
    r = evaluate_cert(cert_file(b"not a cert"), NOW, 30)
    assert not r.ok and r.critical and "is not a PEM certificate" in r.detail


# -- clocks ---------------------------------------------------------------------------------------


def test_a_sample_is_the_remote_reading_against_the_bracket_midpoint() -> None:
    s = sample_from("m1", 100.0, 130.06, 100.1)
    assert s.offset_s == pytest.approx(30.01) and s.uncertainty_s == pytest.approx(0.05)
    assert s.host_time.timestamp() == pytest.approx(130.06)
    with pytest.raises(ValueError):
        sample_from("m1", 100.1, 100.0, 100.0)
    assert parse_epoch("1795775248.101331849\n") == pytest.approx(1795775248.101331849)
    with pytest.raises(ValueError):
        parse_epoch("1795775248.%N")  # busybox: refused, not read as whole seconds


def _samples(offsets: dict[str, float], u: float = 0.02, at: dt.datetime = NOW) -> dict:
    t = at.timestamp()
    return {h: sample_from(h, t, t + u + o, t + 2 * u) for h, o in offsets.items()}


def test_skew_names_the_host_off_the_median() -> None:
    clocks = _samples({"master1": 0.0, "master2": 0.004, "master3": -0.003, "node1": 30.0, "node2": 0.001})
    rep = skew(clocks)
    assert rep is not None and rep.ahead == "node1" and rep.behind == "master3"
    assert rep.max_skew_s == pytest.approx(30.003) and rep.uncertainty_s == pytest.approx(0.04)
    assert rep.outliers(1.0) == ("node1",)
    results = {r.host: r for r in evaluate_clocks(clocks, 1.0)}
    assert [h for h, r in results.items() if not r.ok] == ["node1"]
    bad = results["node1"]
    assert not bad.critical and "29.999 s ahead of the hosts' median" in bad.detail
    assert "skew between node1 and master3 is 30.003 s" in bad.detail and "sync node1" in bad.hint
    assert "behind" in results["master3"].detail


def test_skew_within_the_measurement_error_is_not_reported() -> None:
    # 1.05 s apart but each reading is uncertain by 0.1 s: not provably over 1 s
    assert skew(_samples({"a": 0.0, "b": 1.05}, u=0.1)).outliers(1.0) == ()  # type: ignore[union-attr]
    two = skew(_samples({"a": 0.0, "b": 3.0}))
    assert two is not None and set(two.outliers(1.0)) == {"a", "b"}  # two hosts: either may be wrong
    assert skew(_samples({"a": 0.0})) is None


def test_an_unmeasured_clock_is_a_warning_that_says_why() -> None:
    clocks = {**_samples({"a": 0.0, "b": 0.1}), "c": Failed("c unreachable: no answer in 3 s")}
    r = {x.host: x for x in evaluate_clocks(clocks, 1.0)}
    assert r["a"].ok and r["b"].ok
    assert not r["c"].ok and not r["c"].critical and "no answer in 3 s" in r["c"].detail


# -- disk -----------------------------------------------------------------------------------------

DF = "/var/lib/etcd\n      Avail       Size Mounted on\n 81800000000 100000000000 /var\n"


def test_free_disk_against_factor_times_the_db() -> None:
    assert parse_df(DF) == (81800000000, 100000000000, "/var")
    with pytest.raises(ValueError):
        parse_df("df: /x: No such file or directory")
    d = DiskFree("master1", "/var/lib/etcd", "/var", 300_000_000, 10**9)
    ok = evaluate_disk("master1", d, 150_000_000, 2.0)
    assert ok.ok and ok.detail.endswith("a restore needs 2 x the 150.0 MB db = 300.0 MB")
    short = evaluate_disk("master1", d, 150_000_001, 2.0)
    assert not short.ok and short.critical and "free 2 B more on /var of master1" in short.hint
    unknown = evaluate_disk("master1", d, None, 2.0)
    assert not unknown.ok and not unknown.critical
    down = evaluate_disk("master1", Failed("no answer within the 5 s deadline"), 1, 2.0)
    assert not down.ok and down.critical and "no answer within the 5 s deadline" in down.detail


# -- learner, snapshot, alarms, quorum ------------------------------------------------------------

HOSTS = (
    Host("master1", "10.9.0.11", frozenset({Role.ETCD})),
    Host("master2", "10.9.0.12", frozenset({Role.ETCD})),
    Host("master3", "10.9.0.13", frozenset({Role.ETCD})),
    Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER})),
)
INV = Inventory(
    cluster="t",
    hosts=HOSTS,
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
)


def _member(name: str, index: int | None, learner: bool = False, errors: tuple[str, ...] = ()) -> MemberState:
    mid = int(INV.host(name).address.rsplit(".", 1)[1])
    st = (
        EndpointStatus(
            f"https://{name}:2379", mid, 11, index, index, 3, index, "3.4.23", 20480, 16384, learner, errors
        )
        if index is not None
        else None
    )
    return MemberState(
        name, name, f"etcd-{name}", mid, f"https://{name}:2379", learner, Reach.OK, None, st,
        None if st else "dial timeout", True,
    )  # fmt: skip


def _state(members: tuple[MemberState, ...], quorum: bool = True) -> ClusterState:
    verdict = "quorum held: 3 of 3 voters healthy, leader master1" if quorum else "quorum lost: ..."
    leader = "master1" if quorum else None
    return ClusterState(
        "t", NOW, members, MemberListSource.LINEARIZABLE, 3, 3, 2, quorum, leader, "master1", verdict
    )


VOTERS = (_member("master1", 5000), _member("master2", 5000), _member("master3", 4990))


def test_a_fork_fails_critically_naming_both_sides() -> None:
    sides = (
        ClusterSide(0x3ED8, "master1", ("master1", "master2"), 900, 9),
        ClusterSide(0xC46E, "master3", ("master3",), 40, 2),
    )
    verdict = "forked: the members form 2 clusters: " + " and ".join(c.describe() for c in sides)
    state = ClusterState(
        "t", NOW, VOTERS, MemberListSource.LINEARIZABLE, 3, 3, 2, False, None, "master1", verdict,
        clusters=sides, forked=True,
    )  # fmt: skip
    r = evaluate_quorum(state)
    assert not r.ok and r.critical and r.check is Check.FORK
    assert "master1, master2 (cluster 3ed8, leader master1, revision 900)" in r.detail
    assert "master3 (cluster c46e, leader master3, revision 40)" in r.detail
    assert "etcd-dr diverged export" in r.hint and "etcd-dr rejoin" in r.hint


def test_learner_lag_against_the_leader() -> None:
    assert learner_lag("node1", "master1", 5000, 4000, 1000).ok
    r = learner_lag("node1", "master1", 5000, 3999, 1000)
    assert (
        not r.ok
        and not r.critical
        and r.detail == "learner node1 is 1001 raft entries behind master1 (limit 1000)"
    )
    assert learner_lag("node1", "master1", 5000, 5003, 10).detail.startswith("learner node1 is 0 raft")
    (r,) = evaluate_learner(_state((*VOTERS, _member("node1", 4500, learner=True))), 100, ("node1",))
    assert not r.ok and r.host == "node1" and "500 raft entries behind master1" in r.detail
    (r,) = evaluate_learner(_state((*VOTERS, _member("node1", None, learner=True))), 100)
    assert not r.ok and not r.critical and "does not answer (dial timeout)" in r.detail


def test_no_learner_is_a_warning_with_the_command_to_add_one() -> None:
    (r,) = evaluate_learner(_state(VOTERS), 1000, ("node1",))
    assert not r.ok and not r.critical and r.host is None
    assert "`etcd-dr learner add --host node1`" in r.hint


def _record(age: dt.timedelta, now: dt.datetime = NOW) -> SnapshotRecord:
    return SnapshotRecord(
        id="t-1", cluster="t", member="master1", endpoint="https://m1:2379", revision=42, raft_index=50,
        size=20512, sha256="0" * 64, created=now - age, verified=True, verdict=Verdict.VERIFIED,
        reason="ok", path=Path("/s/t-1.db"),
    )  # fmt: skip


def test_snapshot_age_against_the_limit() -> None:
    where = Path("/var/lib/etcd-dr/snapshots")
    ok = evaluate_snapshot(_record(dt.timedelta(hours=2)), NOW, 26, where)
    assert ok.ok and "is 2.0 h old (limit 26 h)" in ok.detail
    stale = evaluate_snapshot(_record(dt.timedelta(hours=30)), NOW, 26, where)
    assert (
        not stale.ok and stale.critical and "is 30.0 h old" in stale.detail and "take one now" in stale.hint
    )
    none = evaluate_snapshot(None, NOW, 26, where)
    assert not none.ok and none.critical and none.detail.startswith(f"no verified snapshot in {where}")


def test_alarms_are_critical_and_fall_back_to_status_without_quorum() -> None:
    st = _state(VOTERS)
    (r,) = evaluate_alarms((Alarm(12, "NOSPACE"),), st)
    assert not r.ok and r.critical and r.host == "master2" and "compact, defragment" in r.hint
    assert evaluate_alarms((), st)[0].ok
    lost = _state((_member("master1", 10, errors=("memberID:11 alarm:CORRUPT",)),), quorum=False)
    (r,) = evaluate_alarms(Failed("etcdserver: request timed out"), lost)
    assert not r.ok and r.critical and r.detail == "alarm CORRUPT is raised on member master1"
    (r,) = evaluate_alarms(Failed("etcdserver: request timed out"), _state(VOTERS, quorum=False))
    assert not r.ok and not r.critical and "request timed out" in r.detail


def test_assess_orders_results_and_counts_only_critical_failures() -> None:
    now = dt.datetime.now(dt.UTC)  # the CA was made at real time: judge it at real time
    good = issue_cert(CA, "m", days=365).cert_pem
    certs = {
        h.name: (
            CertFile(h.name, CertKind.MEMBER, INV.etcd.cert_path(h), good),
            CertFile(h.name, CertKind.CA, INV.etcd.ca_path(), CA.cert_pem),
        )
        for h in HOSTS
        if h.is_voter
    }
    certs["node1"] = Failed("node1 unreachable: no answer in 3 s")
    g = Gathered(
        state=_state(VOTERS),
        alarms=(),
        snapshot=_record(dt.timedelta(hours=1), now),
        clocks=_samples({"master1": 0, "master2": 0, "master3": 0, "node1": 0}, at=now),
        certs=certs,
        disks={h.name: DiskFree(h.name, "/var/lib/etcd", "/", 10**10, 10**11) for h in HOSTS},
        snapshot_dir=Path("/s"),
        deadline_s=15,
        started=0.0,
        finished=1.25,
    )
    r = assess(INV, g, now=now)
    assert [x.check for x in r.results[:4]] == [Check.QUORUM, Check.ALARMS, Check.LEARNER, Check.SNAPSHOT]
    # node1 is a learner host not set up yet: its unreadable certificates are warnings, not failures
    assert r.ok and r.critical_failures == ()
    assert {(x.check, x.host) for x in r.warnings} == {
        (Check.LEARNER, None), (Check.CERT, "node1")
    }  # fmt: skip
    assert r.summary.startswith("ready: ") and "warnings (learner, cert node1, cert node1)" in r.summary
    j = r.to_json()
    assert j["ok"] is True and j["critical_failures"] == 0 and j["duration_s"] == 1.25
    assert set(j["results"][0]) == {"check", "host", "ok", "critical", "detail", "hint"}


def test_a_refused_host_key_is_said_as_such_and_never_called_a_certificate_problem() -> None:
    """The reviewer's case: SSH refused master2's key (reinstalled host, or an interception). check
    used to call its certificates unreadable and suggest re-issuing them."""
    now = dt.datetime.now(dt.UTC)
    good = issue_cert(CA, "m", days=365).cert_pem
    certs: dict[str, object] = {
        h.name: (
            CertFile(h.name, CertKind.MEMBER, INV.etcd.cert_path(h), good),
            CertFile(h.name, CertKind.CA, INV.etcd.ca_path(), CA.cert_pem),
        )
        for h in HOSTS
        if h.runs_etcd
    }
    # what run_all makes of the executor's HostKeyError (its message, as SSHExecutor words it)
    (refused,) = run_all(
        {"x": lambda: (_ for _ in ()).throw(HostKeyError("master2", "host key refused: 10.9.0.12 ..."))}, 5
    ).values()
    assert refused == Failed("master2: host key refused: 10.9.0.12 ...", FailCause.HOST_KEY)
    certs["master2"] = refused
    clocks = _samples({"master1": 0, "master3": 0, "node1": 0}, at=now) | {"master2": refused}
    disks = {h.name: DiskFree(h.name, "/var/lib/etcd", "/", 10**10, 10**11) for h in HOSTS}
    disks["master2"] = refused
    g = Gathered(
        state=_state(VOTERS),
        alarms=(),
        snapshot=_record(dt.timedelta(hours=1), now),
        clocks=clocks,
        certs=certs,
        disks=disks,
        snapshot_dir=Path("/s"),
        deadline_s=15,
        started=0.0,
        finished=1.0,
    )
    r = assess(INV, g, now=now)
    mine = [x for x in r.results if x.host == "master2"]
    (ssh,) = [x for x in mine if x.check is Check.SSH]
    assert not ssh.ok and ssh.critical and ssh.detail == refused.reason
    assert "host key changed or is unknown" in ssh.hint and str(INV.ssh.known_hosts) in ssh.hint
    assert "ssh-keygen -lf" in ssh.hint and "ssh-keygen -R" in ssh.hint
    for x in mine:
        assert "re-issue" not in x.hint and "cert issue" not in x.hint, x
    assert {(x.check, x.critical, x.detail) for x in mine if x.check is not Check.SSH} == {
        (c, False, "not checked: SSH refused master2's host key")
        for c in (Check.CERT, Check.CLOCK, Check.DISK)
    }
    assert [x.host for x in r.critical_failures] == ["master2"] and not r.ok
    # a plain connection failure stays what it was: not a host-key message
    gone = Failed("master2 unreachable: no answer in 3 s")
    certs["master2"] = gone
    disks["master2"] = gone
    r = assess(INV, dataclasses.replace(g, certs=certs, clocks=clocks | {"master2": gone}), now=now)
    assert not any(x.check is Check.SSH for x in r.results)


# -- the deadline, the CLI ------------------------------------------------------------------------


def test_one_deadline_bounds_every_probe() -> None:
    def boom() -> None:
        raise RuntimeError("probe bug")

    t0 = time.monotonic()
    out = run_all({"fast": lambda: 1, "slow": lambda: time.sleep(5), "boom": boom}, 0.3)
    took = time.monotonic() - t0
    assert out["fast"] == 1
    assert out["slow"] == Failed("no answer within the 0.3 s deadline", FailCause.DEADLINE)
    assert out["boom"] == Failed("RuntimeError: probe bug")
    assert 0.29 < took < 1.0


def test_check_refuses_a_bad_deadline_with_exit_2(capsys) -> None:
    assert main(["check", "--deadline", "0", "-i", "/nonexistent.yaml"]) == 2
    assert "--deadline 0" in capsys.readouterr().err
    assert main(["check", "-i", "/nonexistent.yaml"]) == 2


class _FlakyGet:
    """An executor whose first read of each file loses the connection (then reads fine)."""

    host = "m1"

    def __init__(self, fail: type[Exception] = TransportError) -> None:
        self.fail, self.tries = fail, []

    def get(self, path: str) -> bytes:
        self.tries.append(path)
        if self.tries.count(path) == 1:
            raise self.fail("m1", "connection lost")
        return b"pem of " + path.encode()


def test_a_certificate_read_that_loses_the_connection_is_tried_once_more() -> None:
    ex = _FlakyGet()
    files = read_certs(INV, INV.host("master1"), ex)
    assert [f.pem for f in files] == [b"pem of " + f.path.encode() for f in files] and len(ex.tries) == 4
    with pytest.raises(HostKeyError):  # a refused host key is never retried
        read_certs(INV, INV.host("master1"), _FlakyGet(HostKeyError))


def test_the_delta_log_lag_is_judged_only_where_a_watcher_ran() -> None:
    from etcd_dr.deltalog.stream import StreamState, StreamStatus
    from etcd_dr.readiness.evaluate import evaluate_deltalog

    now = 1_000_000.0

    def st(state: StreamState, **kw: object) -> StreamStatus:
        base = dict(cluster="lab", state=state, reason="r", last_revision=500, cluster_revision=500,
                    caught_up_at=now - 0.5, updated=now - 0.5, pid=42)  # fmt: skip
        return StreamStatus(**{**base, **kw})  # type: ignore[arg-type]

    assert evaluate_deltalog(None, now, 10.0) is None
    ok = evaluate_deltalog(st(StreamState.STREAMING), now, 10.0)
    assert ok is not None and ok.ok and "every revision up to revision 500, 0 behind" in ok.detail
    behind = evaluate_deltalog(
        st(StreamState.STREAMING, cluster_revision=900, caught_up_at=now - 30), now, 10.0
    )
    assert behind is not None and not behind.ok and behind.critical and "400 behind" in behind.detail
    gap = evaluate_deltalog(st(StreamState.GAP, reason="etcd compacted past revision 501"), now, 10.0)
    assert gap is not None and gap.critical and "new full snapshot" in gap.hint
    stale = evaluate_deltalog(st(StreamState.STREAMING, updated=now - 60), now, 10.0)
    assert stale is not None and not stale.ok and "pid 42" in stale.detail and "backup stream" in stale.hint
    waiting = evaluate_deltalog(st(StreamState.WAITING, reason="no member answers"), now, 10.0)
    assert waiting is not None and not waiting.ok and not waiting.critical
