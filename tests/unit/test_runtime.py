"""etcd_flags, MemberSpec from an inventory, and both runtimes' command lines over a fake executor."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from etcd_dr.errors import CommandError, InputError
from etcd_dr.executor import CommandResult, Executor
from etcd_dr.inventory import ClientTLS, EtcdSettings, Host, Inventory, Role, RuntimeKind, SshSettings
from etcd_dr.runtime import (
    DockerRuntime,
    InitialClusterState,
    MemberSpec,
    MemberStatus,
    ProcessRuntime,
    etcd_flags,
    runtime_for,
)
from tests.unit.test_stepctx import counted

M = [Host(f"master{i}", f"10.9.0.1{i}", frozenset({Role.ETCD})) for i in (1, 2, 3)]
N1 = Host("node1", "10.9.0.21", frozenset({Role.ETCD_LEARNER}))


def inv(runtime: RuntimeKind = RuntimeKind.DOCKER) -> Inventory:
    return Inventory(
        cluster="t",
        hosts=(*M, N1),
        etcd=EtcdSettings(
            runtime=runtime, client=ClientTLS(Path("ca"), Path("c"), Path("k")), image="lab/etcd:1"
        ),
        ssh=SshSettings(key_file=Path("id"), known_hosts=Path("kh")),
    )


def test_etcd_flags_rke_style() -> None:
    spec = MemberSpec.for_host(inv(), M[0], M, data_dir="/var/lib/rancher/etcd")
    f = etcd_flags(spec)
    assert f[:2] == ["--name=etcd-master1", "--data-dir=/var/lib/rancher/etcd"]
    assert "--listen-client-urls=https://10.9.0.11:2379,https://127.0.0.1:2379" in f
    assert "--advertise-client-urls=https://10.9.0.11:2379" in f
    assert "--listen-peer-urls=https://10.9.0.11:2380" in f
    assert (
        "--initial-cluster=etcd-master1=https://10.9.0.11:2380,etcd-master2=https://10.9.0.12:2380,"
        "etcd-master3=https://10.9.0.13:2380"
    ) in f
    for flag in (
        "--initial-cluster-state=new",
        "--initial-cluster-token=etcd-cluster-1",
        "--heartbeat-interval=500",
        "--election-timeout=5000",
        "--client-cert-auth",
        "--peer-client-cert-auth",
        "--trusted-ca-file=/etc/kubernetes/ssl/kube-ca.pem",
        "--peer-trusted-ca-file=/etc/kubernetes/ssl/kube-ca.pem",
        "--cert-file=/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem",
        "--key-file=/etc/kubernetes/ssl/kube-etcd-10-9-0-11-key.pem",
        "--peer-cert-file=/etc/kubernetes/ssl/kube-etcd-10-9-0-11.pem",
        "--peer-key-file=/etc/kubernetes/ssl/kube-etcd-10-9-0-11-key.pem",
    ):
        assert flag in f
    assert all(x.startswith("--") for x in f) and "" not in f


def test_learner_joining_adds_itself_and_says_existing() -> None:
    spec = MemberSpec.for_host(
        inv(), N1, M, state=InitialClusterState.EXISTING, extra_flags=["--snapshot-count=100"]
    )
    f = etcd_flags(spec)
    assert "--initial-cluster-state=existing" in f
    assert f[-1] == "--snapshot-count=100"
    assert "etcd-node1=https://10.9.0.21:2380" in next(x for x in f if x.startswith("--initial-cluster="))


def test_flags_refuse_a_member_missing_from_its_cluster() -> None:
    spec = MemberSpec.for_host(inv(), M[0], M)
    bad = MemberSpec(**{**spec.__dict__, "initial_cluster": (("other", "https://1.2.3.4:2380"),)})
    with pytest.raises(InputError, match="not in its own initial cluster"):
        etcd_flags(bad)


def test_ipv6_urls_are_bracketed() -> None:
    spec = MemberSpec("m", "fd00::1", "/d", (("m", "https://[fd00::1]:2380"),), "ca", "c", "k")
    assert "--advertise-client-urls=https://[fd00::1]:2379" in etcd_flags(spec)


class FakeExecutor:
    """Records argv; answers from a script of (predicate, result) pairs."""

    host = "h"

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.files: dict[str, bytes] = {}
        self.answers = answers or {}

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        reason: str = "",
    ) -> CommandResult:
        argv = tuple(argv)
        self.calls.append(argv)
        joined = shlex.join(argv)
        rc, out, err = next((v for k, v in self.answers.items() if k in joined), (0, "", ""))
        if check and rc != 0:
            raise CommandError(self.host, joined, rc, err)
        return CommandResult(self.host, argv, rc, out, err, 0.0)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, reason: str = "") -> None:
        self.files[remote_path] = data

    def get(self, remote_path: str) -> bytes:
        if remote_path not in self.files:
            raise CommandError(self.host, f"cat {remote_path}", 1, "No such file")
        return self.files[remote_path]

    def tunnel(self, address: str, port: int) -> contextlib.AbstractContextManager[tuple[str, int]]:
        return contextlib.nullcontext((address, port))

    def close(self) -> None:
        pass


def test_fake_is_an_executor() -> None:
    assert isinstance(FakeExecutor(), Executor)


def test_docker_start_is_rke_shaped() -> None:
    ex = FakeExecutor()
    rt = DockerRuntime(ex, "etcd", "lab/etcd:3.4.23", docker="/usr/bin/docker")
    spec = MemberSpec.for_host(inv(), M[1], M, data_dir=rt.data_dir_for("/var/lib/etcd"))
    rt.start(spec)
    argv = ex.calls[-1]
    assert argv[:5] == ("/usr/bin/docker", "run", "-d", "--name", "etcd")
    assert "--network=host" in argv and "--restart=always" in argv
    assert "/var/lib/etcd:/var/lib/rancher/etcd" in argv
    i = argv.index("lab/etcd:3.4.23")
    assert list(argv[i + 1 :]) == etcd_flags(spec)
    assert "--data-dir=/var/lib/rancher/etcd" in argv


def test_docker_args_drop_the_blank_line_of_the_inspect_template() -> None:
    ex = FakeExecutor({"inspect": (0, "--name=etcd-master1\n--client-cert-auth\n\n", "")})
    assert DockerRuntime(ex).args() == ["--name=etcd-master1", "--client-cert-auth"]


def test_docker_missing_container() -> None:
    ex = FakeExecutor({"inspect": (1, "", "Error: No such object: etcd")})
    rt = DockerRuntime(ex)
    assert not rt.exists() and not rt.is_running()


def test_docker_rename_returns_the_renamed_runtime() -> None:
    ex = FakeExecutor()
    old = DockerRuntime(ex, "etcd", "img").rename("etcd-old-1")
    assert ex.calls[-1] == ("docker", "rename", "etcd", "etcd-old-1")
    old.set_restart(False)
    assert ex.calls[-1] == ("docker", "update", "--restart=no", "etcd-old-1")


def test_docker_start_without_image_is_input_error() -> None:
    with pytest.raises(InputError, match="no image"):
        DockerRuntime(FakeExecutor()).start(MemberSpec.for_host(inv(), M[0], M))


def test_paths_map_through_binds() -> None:
    rt = DockerRuntime(FakeExecutor())
    assert rt.data_dir_for("/var/lib/etcd") == "/var/lib/rancher/etcd"
    assert rt.host_path("/var/lib/rancher/etcd/member/snap/db") == "/var/lib/etcd/member/snap/db"
    assert rt.host_path("/elsewhere") == "/elsewhere"
    assert ProcessRuntime(FakeExecutor()).data_dir_for("/var/lib/etcd") == "/var/lib/etcd"


def test_process_start_writes_an_enabled_unit_and_args_read_it_back() -> None:
    ex = FakeExecutor({"/proc/": (1, "", "")})  # pid(): not running yet
    rt = ProcessRuntime(ex, "/opt/etcd-3.5.16/bin/etcd")
    spec = MemberSpec.for_host(inv(RuntimeKind.PROCESS), M[2], M)
    rt.start(spec)
    unit = ex.files["/etc/etcd-dr/units/etcd.sh"].decode()
    assert "exec /opt/etcd-3.5.16/bin/etcd --name=etcd-master3" in unit
    assert ("touch", "/etc/etcd-dr/units/etcd.enabled") in ex.calls
    launch = ex.calls[-1]
    assert "setsid nohup" in launch[2] and "</dev/null" in launch[2] and "&&" not in launch[2]
    assert rt.args() == etcd_flags(spec)


def test_process_pid_checks_the_binary() -> None:
    ex = FakeExecutor({"/proc/": (0, "42\n/usr/bin/etcd\n--name=x\n", "")})
    assert ProcessRuntime(ex, "/usr/bin/etcd").pid() == 42
    assert ProcessRuntime(ex, "/opt/other/etcd").pid() is None


def test_runtime_for_follows_the_inventory() -> None:
    assert isinstance(runtime_for(inv(RuntimeKind.DOCKER), FakeExecutor()), DockerRuntime)
    rt = runtime_for(inv(RuntimeKind.PROCESS), FakeExecutor())
    assert isinstance(rt, ProcessRuntime) and rt.binary == "/usr/bin/etcd"


def test_process_statuses_say_in_one_script_what_the_single_checks_say(tmp_path: Path) -> None:
    """Units on this machine (LocalExecutor): a running one (a real process of the binary), a
    stopped one, a missing one; statuses() agrees with exists/is_running/restarts/args."""
    import subprocess

    from etcd_dr.executor import LocalExecutor

    units, run, logs = tmp_path / "units", tmp_path / "run", tmp_path / "log"
    ex = LocalExecutor("here")
    rt = ProcessRuntime(ex, "/bin/sleep", "etcd", unit_dir=str(units), run_dir=str(run), log_dir=str(logs))
    units.mkdir()
    run.mkdir()
    (units / "etcd.sh").write_text("#!/bin/sh\nexec /bin/sleep 30 '--name=a b'\n")
    (units / "etcd.enabled").write_text("")
    (units / "old.sh").write_text("#!/bin/sh\nexec /bin/sleep 1\n")
    p = subprocess.Popen(["/bin/sleep", "30"])
    try:
        (run / "etcd.pid").write_text(f"{p.pid}\n")
        (run / "old.pid").write_text("999999999\n")
        calls = counted(ex)
        st = rt.statuses("etcd", "old", "none")
        assert len(calls) == 1  # one round trip for three units
        assert st["etcd"] == MemberStatus("etcd", True, True, True, ("30", "--name=a b"))
        assert st["old"] == MemberStatus("old", True, False, False, ("1",))
        assert st["none"] == MemberStatus("none", False)
        for name in ("etcd", "old", "none"):
            one = ProcessRuntime(ex, "/bin/sleep", name, unit_dir=str(units), run_dir=str(run))
            assert (st[name].exists, st[name].running, st[name].restarts) == (
                one.exists(), one.is_running(), one.restarts()
            )  # fmt: skip
            if st[name].exists:
                assert list(st[name].args) == one.args()
    finally:
        p.kill()
        p.wait()


def test_process_rename_moves_unit_and_marker_in_one_command_never_over_another(tmp_path: Path) -> None:
    from etcd_dr.executor import LocalExecutor
    from etcd_dr.runtime import RuntimeStateError

    units, run = tmp_path / "units", tmp_path / "run"
    units.mkdir()
    (units / "etcd.sh").write_text("#!/bin/sh\nexec /bin/sleep 1\n")
    (units / "etcd.enabled").write_text("")
    ex = LocalExecutor("here")
    calls = counted(ex)
    rt = ProcessRuntime(ex, "/bin/sleep", "etcd", unit_dir=str(units), run_dir=str(run))
    old = rt.rename("etcd-old-1")
    assert len(calls) == 1 and old.name == "etcd-old-1"
    assert (units / "etcd-old-1.sh").exists() and (units / "etcd-old-1.enabled").exists()
    assert not (units / "etcd.sh").exists()  # the name is free; no pidfile was there to move
    with pytest.raises(RuntimeStateError, match="no unit"):
        rt.rename("etcd-old-2")
    (units / "etcd.sh").write_text("#!/bin/sh\nexec /bin/sleep 2\n")
    with pytest.raises(CommandError, match="exists already"):
        rt.rename("etcd-old-1")
    assert (units / "etcd.sh").read_text().endswith("sleep 2\n")  # both kept


@pytest.mark.parametrize(("code", "by_itself"), [("143", True), ("0", True), ("137", False)])
def test_docker_stop_says_whether_docker_had_to_kill_it(code: str, by_itself: bool) -> None:
    """`docker stop -t N` sends KILL after N s: the container's exit code 137 (128 + SIGKILL) says
    the member did not stop by itself; any other code, that it exited on the TERM."""
    ex = FakeExecutor({"{{.State.ExitCode}}": (0, f"{code}\n", "")})
    assert DockerRuntime(ex, image="img").stop(5) is by_itself
    assert ex.calls[0][:4] == ("docker", "stop", "-t", "5")
