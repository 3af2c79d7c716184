"""etcd_dr.stepctx's file verbs against LocalExecutor in a tmp dir (real files, real commands,
audited), and its one `wait`."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from etcd_dr.errors import CommandError, EtcdDrError
from etcd_dr.executor import LocalExecutor
from etcd_dr.stepctx import HostFS, WaitTimeout, wait


def counted(ex: LocalExecutor) -> list[list[str]]:
    """The argv of every command ex runs from now on (a round trip each over SSH)."""
    ran: list[list[str]] = []
    real = ex.run
    ex.run = lambda argv, **kw: ran.append(list(argv)) or real(argv, **kw)  # type: ignore[method-assign]
    return ran


@pytest.fixture
def fs() -> HostFS:
    return HostFS(LocalExecutor("here"))


def test_tests_answer_several_checks_in_one_command(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    ex = LocalExecutor("here")
    ran = counted(ex)
    got = HostFS(ex).tests(
        ("-d", str(tmp_path / "d")), ("-f", str(tmp_path / "d")), ("-e", str(tmp_path / "none")),
        ("-f", str(tmp_path / "f")), ("-e", str(tmp_path / "with space")),
    )  # fmt: skip
    assert got == (True, False, False, True, False)
    assert len(ran) == 1  # one round trip for all five
    with pytest.raises(ValueError, match="test flag"):
        HostFS(ex).tests(("-x; rm", "/"))


def test_exists_is_dir_is_file(fs: HostFS, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert fs.exists(str(tmp_path)) and fs.is_dir(str(tmp_path)) and not fs.is_file(str(tmp_path))
    assert fs.is_file(str(tmp_path / "f")) and not fs.is_dir(str(tmp_path / "f"))
    assert not fs.exists(str(tmp_path / "none"))


def test_makedirs_sets_the_mode_of_the_new_dir(fs: HostFS, tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    fs.makedirs(str(d))
    assert d.is_dir() and d.stat().st_mode & 0o777 == 0o700
    fs.makedirs(str(d))  # there already: fine


def test_move_aside_never_overwrites(fs: HostFS, tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "keep").write_text("1")
    aside = fs.move_aside(str(d), "bak-1")
    assert aside == f"{d}.bak-1" and (Path(aside) / "keep").read_text() == "1" and not d.exists()
    d.mkdir()
    with pytest.raises(CommandError, match="exists already"):
        fs.move_aside(str(d), "bak-1")
    assert d.is_dir() and (Path(aside) / "keep").read_text() == "1"  # both kept


def test_copy_atomic_copies_a_tree_and_replaces_only_its_own_part(fs: HostFS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "member" / "snap").mkdir(parents=True)
    (src / "member" / "snap" / "db").write_bytes(b"db" * 1000)
    dst = tmp_path / "dst"
    Path(f"{dst}.part").mkdir()  # a leftover of an interrupted copy: ours, replaced
    (Path(f"{dst}.part") / "half").write_text("x")
    fs.copy_atomic(str(src), str(dst))
    assert (dst / "member" / "snap" / "db").read_bytes() == b"db" * 1000
    assert not Path(f"{dst}.part").exists() and not (dst / "half").exists()
    with pytest.raises(CommandError):
        fs.copy_atomic(str(tmp_path / "none"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_sha256_read_and_write_atomic(fs: HostFS, tmp_path: Path) -> None:
    p = tmp_path / "work" / "db"
    fs.write_atomic(b"snapshot", str(p), mode=0o600)
    assert p.read_bytes() == b"snapshot" and p.stat().st_mode & 0o777 == 0o600
    assert p.parent.stat().st_mode & 0o777 == 0o700
    assert fs.sha256(str(p)) == hashlib.sha256(b"snapshot").hexdigest()
    assert fs.sha256(str(tmp_path / "none")) is None
    assert fs.read(str(p)) == b"snapshot"
    assert [q.name for q in p.parent.iterdir()] == ["db"]  # no temp file left


def test_every_verb_goes_through_the_executor_and_is_audited(tmp_path: Path) -> None:
    from etcd_dr.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    fs = HostFS(LocalExecutor("here", audit=log))
    fs.makedirs(str(tmp_path / "d"))
    fs.write_atomic(b"x", str(tmp_path / "d" / "f"))
    fs.move_aside(str(tmp_path / "d" / "f"), "old")
    text = (tmp_path / "audit.jsonl").read_text()
    assert "mkdir" in text and str(tmp_path / "d" / "f") in text and "f.old" in text


def test_wait_returns_once_true_and_raises_the_given_error() -> None:
    t0 = time.monotonic()
    calls = iter([False, False, True])
    wait(lambda: next(calls), 5, "third time", poll=0.01)
    assert time.monotonic() - t0 < 1

    class Mine(EtcdDrError):
        pass

    with pytest.raises(Mine, match="never: not true after 0 s"):
        wait(lambda: False, 0.05, "never", error=Mine, poll=0.01)
    with pytest.raises(WaitTimeout):
        wait(lambda: False, 0.05, "never", poll=0.01)


def test_look_answers_tests_files_and_the_clock_in_one_command(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n\x00\xffbinary too\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    ex = LocalExecutor("here")
    ran = counted(ex)
    got = HostFS(ex).look(
        tests=(("-d", str(tmp_path / "d")), ("-e", str(tmp_path / "none"))),
        files=(
            str(tmp_path / "cert.pem"),
            str(tmp_path / "none"),
            str(tmp_path / "d"),
            str(tmp_path / "empty"),
        ),
        clock=True,
    )
    assert len(ran) == 1
    assert got.tests == (True, False)
    assert got.files == (b"-----BEGIN CERTIFICATE-----\n\x00\xffbinary too\n", None, None, b"")
    assert got.clock is not None and abs(got.clock - time.time()) < 5 and got.skew_s is not None
    assert abs(got.skew_s) < 1 and got.rtt_s >= 0
    assert HostFS(ex).look(files=(str(tmp_path / "none"),)).clock is None
    assert HostFS(ex).read_optional(str(tmp_path / "cert.pem"), str(tmp_path / "x"))[1] is None


def test_move_aside_of_nothing_with_missing_ok_is_none_in_one_command(tmp_path: Path) -> None:
    ex = LocalExecutor("here")
    ran = counted(ex)
    fs = HostFS(ex)
    assert fs.move_aside(str(tmp_path / "none"), "bak-1", missing_ok=True) is None and len(ran) == 1
    with pytest.raises(CommandError, match="does not exist"):
        fs.move_aside(str(tmp_path / "none"), "bak-1")
    (tmp_path / "k").write_text("x")
    assert fs.mode(str(tmp_path / "k")) == (tmp_path / "k").stat().st_mode & 0o777
    assert fs.mode(str(tmp_path / "none")) is None


def test_a_step_context_closes_what_it_opened(tmp_path: Path) -> None:
    from etcd_dr.stepctx import StepContext
    from tests.unit.test_learner_plan import INV

    with StepContext(INV, None, print) as c:
        c._executors["x"] = LocalExecutor("x")
    assert c._executors == {}


def test_renames_moves_what_is_there_in_one_command_and_never_over_anything(tmp_path: Path) -> None:
    ex = LocalExecutor("here")
    ran = counted(ex)
    fs = HostFS(ex)
    (tmp_path / "unit.sh").write_text("exec etcd")
    (tmp_path / "unit.enabled").write_text("")
    got = fs.renames(
        (str(tmp_path / "unit.sh"), str(tmp_path / "old.sh")),
        (str(tmp_path / "unit.enabled"), str(tmp_path / "old.enabled")),
        (str(tmp_path / "unit.pid"), str(tmp_path / "old.pid")),  # not there: skipped
    )
    assert got == (True, True, False) and len(ran) == 1
    assert (tmp_path / "old.sh").read_text() == "exec etcd" and not (tmp_path / "unit.sh").exists()
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(CommandError, match="exists already"):  # checked before anything moved
        fs.renames(
            (str(tmp_path / "old.sh"), str(tmp_path / "new.sh")), (str(tmp_path / "a"), str(tmp_path / "b"))
        )
    assert (tmp_path / "old.sh").exists() and (tmp_path / "a").read_text() == "a"


def test_digests_of_every_file_under_a_dir_in_one_command(fs: HostFS, tmp_path: Path) -> None:
    d = tmp_path / "ssl"
    (d / "sub").mkdir(parents=True)
    (d / "kube-ca.pem").write_bytes(b"ca")
    (d / "sub" / "x-key.pem").write_bytes(b"key")
    got = fs.digests(str(d))
    assert got == {
        "kube-ca.pem": hashlib.sha256(b"ca").hexdigest(),
        "sub/x-key.pem": hashlib.sha256(b"key").hexdigest(),
    }
    assert fs.digests(str(tmp_path / "absent")) is None
    assert fs.digests(str(tmp_path / "ssl" / "kube-ca.pem")) is None  # a file is no directory


def test_matches_manifest_in_one_command(fs: HostFS, tmp_path: Path) -> None:
    d = tmp_path / "ssl_old"
    d.mkdir()
    (d / "a.pem").write_bytes(b"a")
    assert not fs.matches_manifest(str(d), "MANIFEST")  # none yet
    (d / "MANIFEST").write_text(f"{hashlib.sha256(b'a').hexdigest()}  ./a.pem\n")
    assert fs.matches_manifest(str(d), "MANIFEST")
    (d / "a.pem").write_bytes(b"changed")
    assert not fs.matches_manifest(str(d), "MANIFEST")
    assert not fs.matches_manifest(str(tmp_path / "absent"), "MANIFEST")


def test_a_member_not_listening_yet_is_dialed_afresh_at_the_next_look() -> None:
    """WaitHealthy: after a refused connect gRPC's channel waits out its reconnect backoff (up to
    1 s) before it dials again; the wait for a just-started member drops that client instead."""
    from etcd_dr.etcd.errors import EtcdUnavailable
    from etcd_dr.plans import Step
    from etcd_dr.recovery.steps import Ctx, RecoveryAction, WaitHealthy, WaitParams
    from tests.unit.test_recovery import INV

    class Refused:
        closed = False

        def status(self, endpoint: str, timeout: float | None = None):
            raise EtcdUnavailable("status", [(endpoint, "connection refused")])

        def close(self) -> None:
            self.closed = True

    ep = "https://10.9.0.21:2379"
    c = Ctx(INV, None, lambda _m: None)
    stub = Refused()
    c._clients[ep] = stub  # type: ignore[assignment]
    step = Step(
        id="wait-healthy:node1",
        action=RecoveryAction.WAIT_HEALTHY,
        host="node1",
        description="wait",
        postcondition="node1 leads alone",
        reason="test",
        params=WaitParams(endpoint=ep, members=1, timeout_s=5),
    )
    assert WaitHealthy(c).done(step) is False
    assert stub.closed and ep not in c._clients  # the next look dials a new channel
