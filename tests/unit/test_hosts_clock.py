"""`etcd-dr hosts clock`'s pure parts: a host's offset judged against the limit, every certificate
judged by its host's clock with the fix that fits (clock or certificate), the cert listing, the
sync tool chosen; and the whole report over fake executors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from etcd_dr.certs import issue_cert, new_ca
from etcd_dr.executor import CommandResult
from etcd_dr.hostcare import ClockSample
from etcd_dr.hostrepair.clock import (
    CertVerdict,
    ClockVerdict,
    SyncTool,
    assess,
    cert_dirs,
    clock_report,
    judge_clock,
    parse_cert_listing,
    sync_command,
    sync_host,
)
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.readiness.model import Failed

NOW = dt.datetime(2022, 6, 1, 4, 49, 1, tzinfo=dt.UTC)
CA = new_ca()
INV = Inventory(
    cluster="t",
    hosts=(
        Host("master1", "10.9.0.11", frozenset({Role.ETCD})),
        Host("master2", "10.9.0.12", frozenset({Role.ETCD})),
        Host("node2", "10.9.0.22", frozenset({Role.WORKER})),
    ),
    etcd=EtcdSettings(RuntimeKind.DOCKER, ClientTLS(Path("ca"), Path("c"), Path("k"))),
    ssh=SshSettings(Path("id"), Path("kh")),
)
MEMBER1 = "/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem"


def sample(host: str, offset: float, err: float = 0.002, at: dt.datetime = NOW) -> ClockSample:
    return ClockSample(host, offset, err, at.timestamp())


def pem(not_before: dt.datetime, days: int = 3650) -> bytes:
    return issue_cert(CA, "kube-etcd", ips=["10.9.0.11"], not_before=not_before, days=days).cert_pem


def test_a_host_is_skewed_only_beyond_the_limit_and_the_error_bar() -> None:
    assert judge_clock(sample("m", 0.9), 1.0)[0] is ClockVerdict.OK
    assert judge_clock(sample("m", 1.05, err=0.1), 1.0)[0] is ClockVerdict.OK  # within the error
    v, s = judge_clock(sample("m", -2.5), 1.0)
    assert (
        v is ClockVerdict.SKEWED
        and s == "2.500 s behind this machine (±0.002 s): over check.max_clock_skew 1 s"
    )


def test_a_certificate_issued_ahead_is_flagged_in_go_words_with_the_certificate_to_blame() -> None:
    nb = dt.datetime(2022, 6, 1, 12, 53, 50, tzinfo=dt.UTC)
    clocks = {h.name: sample(h.name, 0.01) for h in INV.hosts}
    certs = {
        "master1": {
            MEMBER1: pem(nb),
            "/etc/kubernetes/ssl_old/kube-node.pem": pem(NOW - dt.timedelta(days=1)),
        },
        "master2": {},
        "node2": {},
    }
    rep = assess(INV, clocks, certs, now=NOW)
    (bad,) = rep.bad_certs
    assert bad.verdict is CertVerdict.NOT_YET_VALID and bad.path == MEMBER1
    # the host's time is the sample's: NOW + its 0.01 s offset
    assert bad.problem == (
        "x509: certificate has expired or is not yet valid: current time 2022-06-01T04:49:01Z "
        "is before 2022-06-01T12:53:50Z"
    )
    assert bad.not_before == nb and bad.host_time.strftime("%H:%M:%S") == "04:49:01"
    assert "issued on a machine whose clock was ahead" in (bad.fix or "")
    assert "etcd-dr cert renew --host master1" in (bad.fix or "")
    assert not rep.ok and rep.skewed == ()
    assert rep.verdict.startswith("1 certificate not valid on their host's clock: master1:" + MEMBER1)


def test_a_host_clock_behind_is_blamed_for_a_certificate_it_finds_not_yet_valid() -> None:
    clocks = {"master1": sample("master1", -7200.0), "master2": sample("master2", 0.0), "node2": Failed("x")}
    certs = {"master1": {MEMBER1: pem(NOW - dt.timedelta(minutes=5))}, "master2": {}, "node2": Failed("x")}
    rep = assess(INV, clocks, certs, now=NOW)
    assert rep.skewed == ("master1",)
    (bad,) = rep.bad_certs
    assert bad.verdict is CertVerdict.NOT_YET_VALID
    assert (
        bad.fix == "sync master1's clock (it is 7200.0 s behind this machine): `etcd-dr hosts clock --sync`"
    )
    node2 = next(h for h in rep.hosts if h.host == "node2")
    assert node2.verdict is ClockVerdict.UNMEASURED and node2.cert_error == "certificates not read: x"
    assert "not measured: node2" in rep.verdict


def test_an_expired_certificate_is_flagged() -> None:
    clocks = {h.name: sample(h.name, 0.0) for h in INV.hosts}
    old = pem(NOW - dt.timedelta(days=400), days=365)
    rep = assess(
        INV, clocks, {"master1": {}, "master2": {}, "node2": {"/etc/kubernetes/ssl/kube-node.pem": old}}
    )
    (bad,) = rep.bad_certs
    assert bad.verdict is CertVerdict.EXPIRED and "is after" in (bad.problem or "")
    assert "rke cert rotate" in (bad.fix or "")


def test_all_fine() -> None:
    clocks = {h.name: sample(h.name, 0.01, at=dt.datetime.now(dt.UTC)) for h in INV.hosts}
    certs = {h.name: {MEMBER1: pem(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))} for h in INV.hosts}
    rep = assess(INV, clocks, certs)
    assert rep.ok and rep.verdict.startswith("clocks ok: 3 hosts") and "3 certificates valid" in rep.verdict


def test_the_cert_listing_keeps_certificate_blocks_per_file() -> None:
    body = CA.cert_pem.decode()
    text = f"==> /a/x.pem\n{body}{body}==> /a/empty.pem\n==> /b/y.crt\n{body}"
    got = parse_cert_listing(text)
    assert sorted(got) == ["/a/x.pem", "/b/y.crt"]
    assert got["/a/x.pem"].count(b"BEGIN CERTIFICATE") == 2
    assert cert_dirs(INV) == ("/etc/kubernetes/ssl", "/etc/kubernetes/ssl_old")


def test_the_sync_tool_is_chosen_in_order() -> None:
    assert sync_command(["timedatectl", "ntpdate", "chronyc"], None)[:2] == (
        SyncTool.CHRONYC,
        ("chronyc", "makestep"),
    )
    assert sync_command(["ntpdate"], "ntp.example")[:2] == (
        SyncTool.NTPDATE,
        ("ntpdate", "-u", "ntp.example"),
    )
    tool, argv, why = sync_command(["ntpdate"], None)
    assert tool is SyncTool.NTPDATE and argv == () and "--ntp-server" in why
    assert sync_command(["timedatectl"], None)[1] == ("timedatectl", "set-ntp", "true")
    assert sync_command([], None)[0] is SyncTool.NONE


class FakeHost:
    """An executor for one host: `date` reads this machine's clock + offset; the sync tool resets
    the offset to 0 (as a stepped clock would); certificate listings from a dict."""

    def __init__(self, host: str, offset: float, files: dict[str, bytes], tools: str = "chronyc") -> None:
        self.host, self.offset, self.files, self.tools = host, offset, files, tools
        self.ran: list[tuple[str, ...]] = []

    def run(
        self, argv, *, timeout=None, check=True, stdin=None, reason="", idempotent=False
    ) -> CommandResult:
        import time

        argv = tuple(argv)
        self.ran.append(argv)
        out = ""
        if argv[0] == "date":
            out = f"{time.time() + self.offset:.9f}\n"
        elif argv[:2] == ("sh", "-c") and argv[3:4] == ("certs",):
            out = "".join(f"==> {p}\n{b.decode()}" for p, b in self.files.items())
        elif argv[:2] == ("sh", "-c"):
            out = self.tools + "\n"
        elif argv[0] == "chronyc":
            self.offset, out = 0.0, "200 OK\n"
        return CommandResult(self.host, argv, 0, out, "", 0.0)

    def close(self) -> None:
        pass


def test_sync_steps_only_the_skewed_host_and_measures_again() -> None:
    fresh = pem(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    fakes = {
        "master1": FakeHost("master1", 30.0, {MEMBER1: fresh}),
        "master2": FakeHost("master2", 0.0, {}),
        "node2": FakeHost("node2", 0.0, {}),
    }
    rep = clock_report(INV, sync=True, executor_factory=lambda h: fakes[h.name])
    assert rep.skewed == ("master1",)
    (act,) = rep.synced
    assert act.host == "master1" and act.tool is SyncTool.CHRONYC and act.ok and act.output == "200 OK"
    assert ("chronyc", "makestep") in fakes["master1"].ran
    assert not any(a[0] == "chronyc" for a in fakes["master2"].ran)
    assert rep.after is not None and rep.after.skewed == () and rep.ok
    assert rep.to_json()["after"]["ok"] is True


def test_a_tool_whose_daemon_is_down_falls_back_to_the_next() -> None:
    class NoChronyd(FakeHost):
        def run(self, argv, **kw) -> CommandResult:
            if argv[0] == "chronyc":
                self.ran.append(tuple(argv))
                return CommandResult(self.host, tuple(argv), 1, "", "506 Cannot talk to daemon\n", 0.0)
            if argv[0] == "ntpdate":
                self.ran.append(tuple(argv))
                self.offset = 0.0
                return CommandResult(
                    self.host, tuple(argv), 0, "step time server 10.0.0.1 offset -30.0 sec\n", "", 0.0
                )
            return super().run(argv, **kw)

    h = NoChronyd("master1", 30.0, {}, tools="chronyc\nntpdate")
    act = sync_host(INV, "master1", ntp_server="10.0.0.1", executor=h)
    assert act.ok and act.tool is SyncTool.NTPDATE and act.argv == ("ntpdate", "-u", "10.0.0.1")
    assert "after: chronyc makestep failed (exit 1: 506 Cannot talk to daemon)" in act.sentence
    h = NoChronyd("master1", 30.0, {}, tools="chronyc\nntpdate")
    act = sync_host(INV, "master1", executor=h)  # no server for ntpdate: said, not guessed
    assert not act.ok and "pass --ntp-server" in act.sentence
