"""`etcd-dr server --database postgresql+asyncpg://...`: Prefect's server on a real PostgreSQL
(Debian's postgresql 15), a throwaway cluster the test makes with initdb in a temp dir (as the
`postgres` user when the test runs as root: initdb refuses root), starts on a free loopback port
and stops by its PID. The password reaches asyncpg through a passfile (PGPASSFILE), not the command
line; it is in no output line and not in the Prefect server's log. A served flow runs and is read
back through the API and from PostgreSQL itself."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.console.conftest import REPO, free_port, start_console, write_inventory

PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = [
    pytest.mark.server,  # starts `etcd-dr server`: not in the quick loop
    pytest.mark.skipif(
        not (PG_BIN / "initdb").exists(),
        reason="no /usr/lib/postgresql/15/bin/initdb: Debian's postgresql (scripts/install.sh installs it)",
    ),
]


@dataclass
class Postgres:
    proc: subprocess.Popen
    port: int
    passfile: Path
    env: dict[str, str]

    def url(self, db: str = "prefect") -> str:  # no password: asyncpg reads it from PGPASSFILE
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "prefect") -> str:
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
             "-Atc", sql],
            capture_output=True, text=True, timeout=30, env=self.env, check=True,
        )  # fmt: skip
        return out.stdout.strip()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    as_user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    # not under pytest's tmp dir: its parents are 0700 root, the postgres user could not reach it
    d = Path(tempfile.mkdtemp(prefix="etcd-dr-pg-"))
    password = secrets.token_urlsafe(16)
    pwfile = d / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(d, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    proc = None
    passdir = Path(tempfile.mkdtemp(prefix="etcd-dr-pgpass-"))
    try:
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(d / "data"), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=120, check=True, **as_user,
        )  # fmt: skip
        pwfile.unlink()
        port = free_port()
        # the test's own client side: the passfile (0600, the test's user) that psql and asyncpg read
        passfile = passdir / "pgpass"
        passfile.write_text(f"127.0.0.1:{port}:*:postgres:{password}\n")
        passfile.chmod(0o600)
        log = (d / "postgres.log").open("wb")
        proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(d / "data"), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={d}", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **as_user,
        )  # fmt: skip
        pg = Postgres(proc, port, passfile, {**os.environ, "PGPASSFILE": str(passfile)})
        t0 = time.monotonic()
        while True:
            try:
                pg.psql("CREATE DATABASE prefect", db="postgres")
                break
            except subprocess.CalledProcessError:
                if proc.poll() is not None or time.monotonic() - t0 > 60:
                    raise AssertionError(
                        "postgres did not start:\n" + (d / "postgres.log").read_text()
                    ) from None
                time.sleep(0.5)
        print(f"\npostgres up in {time.monotonic() - t0:.1f} s (pid {proc.pid}, port {port})")
        yield pg
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(passdir, ignore_errors=True)


def test_the_server_on_postgresql_runs_a_flow(postgres: Postgres, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PGPASSFILE", str(postgres.passfile))
    password = postgres.passfile.read_text().strip().rsplit(":", 1)[1]
    t0 = time.monotonic()
    c = start_console(tmp_path, {"alpha": {}}, "--no-receiver", "--database", postgres.url(), ready_s=400)
    started_s = time.monotonic() - t0
    try:
        assert any(postgres.url() in line for line in c.lines), c.lines  # what it runs on, said
        deps = c.deployments()
        assert {"status", "recover", "check"} <= set(deps), set(deps)
        # the deployments are PostgreSQL's rows
        assert int(postgres.psql("SELECT count(*) FROM deployment")) == len(deps)
        t1 = time.monotonic()
        run = c.post(f"/deployments/{deps['status']['id']}/create_flow_run",
                     {"parameters": {"cluster": "alpha", "check_ssh": False}})["id"]  # type: ignore[index]  # fmt: skip
        deadline = time.monotonic() + 240
        while (st := c.get(f"/flow_runs/{run}")["state"])["type"] not in ("COMPLETED", "FAILED", "CRASHED"):  # type: ignore[index]
            assert time.monotonic() < deadline, st
            time.sleep(1)
        run_s = time.monotonic() - t1
        assert st["type"] == "COMPLETED", st
        assert c.get(f"/flow_runs/{run}")["name"] == "status-alpha"  # type: ignore[index]
        assert (
            postgres.psql(f"SELECT name, state_type FROM flow_run WHERE id = '{run}'")
            == "status-alpha|COMPLETED"
        )
    finally:
        rc = c.stop()
    assert rc == 0, "\n".join(c.lines)
    assert not any(password in line for line in c.lines)
    assert password not in (c.data / "prefect-server.log").read_text()
    print(f"\nstarted on PostgreSQL in {started_s:.1f} s; status run created to Completed in {run_s:.1f} s")


def test_a_worker_elsewhere_runs_the_pools_runs(postgres: Postgres, tmp_path: Path, monkeypatch) -> None:
    """--work-pool: the server registers the deployments for a process pool and runs nothing
    itself; a `prefect worker start` process (another machine's, in its own environment) pulls the
    run and runs it."""
    monkeypatch.setenv("PGPASSFILE", str(postgres.passfile))
    postgres.psql("CREATE DATABASE prefect_pool", db="postgres")
    c = start_console(tmp_path, {"alpha": {}}, "--no-receiver", "--database", postgres.url("prefect_pool"),
                      "--work-pool", "etcd-dr-test", ready_s=400)  # fmt: skip
    worker = None
    try:
        assert any("runs: work pool etcd-dr-test" in line for line in c.lines), c.lines
        deps = c.deployments()
        assert deps["status"]["work_pool_name"] == "etcd-dr-test", deps["status"]
        assert deps["status"]["entrypoint"] == "console.flows:status", deps["status"]
        run = c.post(f"/deployments/{deps['status']['id']}/create_flow_run",
                     {"parameters": {"cluster": "alpha", "check_ssh": False}})["id"]  # type: ignore[index]  # fmt: skip
        time.sleep(6)  # no worker yet: the server does not run it
        assert c.get(f"/flow_runs/{run}")["state"]["type"] == "SCHEDULED"  # type: ignore[index]
        home = tmp_path / "worker-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=c.api, PREFECT_HOME=str(home), ETCD_DR_HOME=str(REPO),
                   ETCD_DR_INVENTORIES=str(tmp_path / "inventories"))  # fmt: skip
        log = (tmp_path / "worker.log").open("w")
        t0 = time.monotonic()
        worker = subprocess.Popen(
            [str(REPO / ".venv/bin/prefect"), "worker", "start", "--pool", "etcd-dr-test", "--type",
             "process"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while (st := c.get(f"/flow_runs/{run}")["state"])["type"] not in ("COMPLETED", "FAILED", "CRASHED"):  # type: ignore[index]
            assert time.monotonic() < deadline and worker.poll() is None, (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(1)
        took = time.monotonic() - t0
        assert st["type"] == "COMPLETED", (st, (tmp_path / "worker.log").read_text())
        assert run in (tmp_path / "worker.log").read_text()  # this worker ran it
        print(f"\nworker started to the pool's run Completed: {took:.1f} s")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
        assert c.stop() == 0, "\n".join(c.lines)


def test_a_bad_database_starts_nothing(tmp_path: Path) -> None:
    write_inventory(tmp_path / "inv" / "a", "a")
    base = [str(REPO / ".venv/bin/etcd-dr"), "server", "--inventories", str(tmp_path / "inv"), "--data",
            str(tmp_path / "d"), "--no-receiver", "--database"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    cases = {
        "mysql://u:s3cret-pw@127.0.0.1/x": "driver 'mysql' is not one Prefect's server runs on",
        f"postgresql+asyncpg://u:s3cret-pw@127.0.0.1:{free_port()}/x": "nothing answers on 127.0.0.1:",
        "postgresql+asyncpg://u:s3cret-pw@127.0.0.1:5/": "no database name",
        "not a url": "--database: not a database URL",
    }
    for url, why in cases.items():
        out = subprocess.run([*base, url], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2 and why in out.stderr, (url, out)
        assert "s3cret-pw" not in out.stderr + out.stdout, out.stderr
    assert not (tmp_path / "d").exists()
