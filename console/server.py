"""`etcd-dr server`: the whole service in one command.

1. the clusters (one inventory per cluster in --inventories), the alert token and both ports are
   checked before anything starts (bad input: exit 2, nothing started);
2. the Prefect server as a child process (SQLite in --data, or PostgreSQL: --database), its own
   session, SIGTERM to it if this process dies (PR_SET_PDEATHSIG); waited for until /api/health
   answers;
3. every deployment of every cluster (console.deployments) served by this process (prefect's Runner:
   no work pool, no worker), the recovery's concurrency limit `recover-<cluster>` per cluster, and
   per cluster the automation `etcd-dr recover <cluster>`: the event etcd-dr.incident.opened for
   resource etcd-dr.cluster.<cluster> runs the recover deployment for that cluster;
4. the alert receiver (console.receiver) on --receiver-port;
5. the UI's URL on stdout; then it serves until SIGINT or SIGTERM: the runner stops (runs in flight
   are cancelled: a recovery's journal resumes it on the next run), the receiver stops, the Prefect
   server gets SIGTERM (SIGKILL after 20 s), any flow-run process left is killed by its PID.
   Schedules are left as they were (not paused on shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from console.alerts import INCIDENTS_FILE, MIXIN_ALERTS, Mapping
from console.clusters import DATA_ENV, INVENTORIES_ENV, Cluster, load_clusters
from etcd_dr.errors import EtcdDrError, InputError

TOKEN_ENV = "ETCD_DR_ALERT_TOKEN"
READY_TIMEOUT_S = 180.0  # a fresh database migrates first (~13 s here, more on a loaded machine)
STOP_GRACE_S = 20.0
POLL_S = 2.0
Say = Callable[[str], None]


def automation_name(cluster: str) -> str:
    return f"etcd-dr recover {cluster}"


@dataclass(frozen=True)
class ServerOptions:
    inventories: Path
    data: Path
    host: str = "127.0.0.1"
    port: int = 4200
    receiver_port: int = 9095
    token: str | None = None  # the alert token (never printed); None with receiver=False
    receiver: bool = True
    alert_names: tuple[str, ...] = ()  # watched besides the mixin's
    alert_label: str = "cluster"
    api_auth: str | None = None  # "user:password" the Prefect server asks for (never printed)
    database: str | None = None  # postgresql+asyncpg://... (its password never printed); None: SQLite
    work_pool: str | None = None  # runs go to this process work pool's workers instead of this process

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite+aiosqlite:///{self.data / 'prefect.db'}"

    @property
    def api_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def read_token(token_file: str | None, env: dict[str, str] | None = None) -> str:
    """The alert token: --alert-token-file, else $ETCD_DR_ALERT_TOKEN. Its text is never shown."""
    env = os.environ if env is None else env
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise InputError(
                f"--alert-token-file {token_file}: cannot be read ({e.strerror}); check it"
            ) from None
        if not token:
            raise InputError(
                f"--alert-token-file {token_file}: empty; put the token Alertmanager sends in it"
            )
        return token
    token = env.get(TOKEN_ENV, "").strip()
    if not token:
        raise InputError(
            f"no alert token: set ${TOKEN_ENV} or --alert-token-file FILE (Alertmanager sends it as "
            "`authorization: {credentials: ...}`), or run with --no-receiver"
        )
    return token


def read_api_auth(path: str) -> str:
    """`user:password` for the Prefect server's basic auth, from a file (its text is never shown)."""
    try:
        auth = Path(path).read_text().strip()
    except OSError as e:
        raise InputError(f"--api-auth-file {path}: cannot be read ({e.strerror}); check it") from None
    user, sep, password = auth.partition(":")
    if not (user and sep and password) or "\n" in auth:
        raise InputError(f"--api-auth-file {path}: expected one line `user:password`")
    return auth


DATABASE_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")


def check_database(url: str) -> str:
    """--database: a URL Prefect's server takes (PostgreSQL through asyncpg, or SQLite), checked
    before anything starts; for PostgreSQL its host must answer on its port. Returns the URL as it
    may be shown (the password masked)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        raise InputError(
            "--database: not a database URL; expected postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DB"
        ) from None
    shown = u.render_as_string(hide_password=True)
    if u.drivername not in DATABASE_SCHEMES:
        raise InputError(
            f"--database {shown}: driver {u.drivername!r} is not one Prefect's server runs on; use "
            "postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DB (or leave it out: SQLite in --data)"
        )
    if u.drivername.startswith("postgresql"):
        if not u.database:
            raise InputError(f"--database {shown}: no database name; add /DBNAME at the end")
        host, port = u.host or "127.0.0.1", u.port or 5432
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            raise InputError(
                f"--database {shown}: nothing answers on {host}:{port} ({e.strerror or e}); start "
                "PostgreSQL there or fix the URL"
            ) from None
    return shown


def _port_free(host: str, port: int, flag: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(
                f"{flag} {port}: cannot listen on {host}:{port} ({e.strerror}); pick another"
            ) from None


def _die_with_parent() -> None:
    """In the Prefect server's child: SIGTERM when etcd-dr server dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_prefect(opts: ServerOptions, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", opts.host, "--port", str(opts.port)]
    # the database URL (and its password) goes to the Prefect server alone, not to the runs
    env = {**env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": opts.database_url}
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent, cwd=opts.data,
        )  # fmt: skip


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = READY_TIMEOUT_S) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise EtcdDrError(
                f"the Prefect server exited with {proc.returncode} while starting; see {log_path}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            if r.status == 200:
                return time.monotonic() - t0
        time.sleep(0.5)
    raise EtcdDrError(f"the Prefect server did not answer {url}/health within {timeout:g} s; see {log_path}")


def stop_process_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
    return out


def prefect_env(opts: ServerOptions) -> dict[str, str]:
    """The environment of the Prefect server, this process's client and every flow run it starts
    (the database's URL is the server's alone: start_prefect)."""
    return {
        "PREFECT_HOME": str(opts.data / "prefect-home"),
        "PREFECT_API_URL": opts.api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": opts.host,
        "PREFECT_SERVER_API_PORT": str(opts.port),
        INVENTORIES_ENV: str(opts.inventories),
        DATA_ENV: str(opts.data),
        # HTTP basic auth: the server asks for it, this process and every run send it
        **({"PREFECT_SERVER_API_AUTH_STRING": opts.api_auth, "PREFECT_API_AUTH_STRING": opts.api_auth}
           if opts.api_auth else {}),
    }  # fmt: skip


def _deliver_prefect_logs_and_events() -> None:
    """This process's last logs and events (the runner's "Cancelled flow run", its state events)
    sent while the Prefect server still answers. Once it is gone Prefect's log worker writes
    "--- Error logging to API ---" and the error's text with no newline to stderr, where the next
    line of ours joined it (one CI run read "All connection attempts failedstopped")."""
    if "prefect" not in sys.modules:  # it failed before serving: nothing to deliver
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a stop must go on whatever the server answers
            worker.drain_all(timeout=STOP_GRACE_S / 4, at_exit=False)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(opts: ServerOptions, say: Say = print) -> int:
    """Check, start, serve until a signal, stop. Returns the exit code (0 after a clean stop)."""
    clusters = load_clusters(opts.inventories)  # every problem of every inventory, before anything starts
    shown_db = check_database(opts.database) if opts.database else f"SQLite {opts.data / 'prefect.db'}"
    _port_free(opts.host, opts.port, "--port")
    if opts.receiver:
        if opts.receiver_port == opts.port:
            raise InputError(f"--receiver-port {opts.receiver_port}: the same as --port; pick another")
        _port_free(opts.host, opts.receiver_port, "--receiver-port")
    # 0700: the database holds blocks (their keys with them) and the receiver's incidents
    opts.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    # until the runner's own handlers are in place, SIGTERM is Ctrl-C: the `finally` below still
    # stops the Prefect server (the CLI exits 130)
    signal.signal(signal.SIGTERM, _interrupt)
    # before prefect is imported in this process: its settings are read from the environment
    os.environ.update(prefect_env(opts))
    log_path = opts.data / "prefect-server.log"
    say(f"starting the Prefect server on {opts.api_url} ({shown_db}; log {log_path})")
    proc = start_prefect(opts, dict(os.environ), log_path)
    try:
        took = wait_ready(proc, opts.api_url, log_path)
        say(f"Prefect server ready in {took:.1f} s")
        from console import deployments  # prefect's settings are in the environment by now

        asyncio.run(_serve(opts, clusters, deployments.build(clusters), say))
    finally:
        _deliver_prefect_logs_and_events()
        stop_process_group(proc)
        for pid in children(os.getpid()):  # a flow run the runner did not reap
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        say("stopped")
    return 0


async def _serve(opts: ServerOptions, clusters: dict[str, Cluster], served: list, say: Say) -> None:
    from prefect.runner import Runner

    from console.metrics import Metrics
    from console.receiver import PrefectSink, Receiver, ReceiverConfig, make_server, start

    # polled every 2 s (Prefect's default: 10 s): an alert's run is created within a fraction of a
    # second of its event, and then waited for the runner's next look
    runner = Runner(name="etcd-dr-server", pause_on_shutdown=False, limit=None, query_seconds=POLL_S)
    ids = {}
    if opts.work_pool:
        ids = await _to_work_pool(served, opts.work_pool)
    else:
        for d in served:
            ids[d.name] = await runner.add_deployment(d)
    await asyncio.to_thread(_limits_and_automations, clusters, ids["recover"])
    where = f"work pool {opts.work_pool} (its workers run them)" if opts.work_pool else "this process"
    say(f"serving {len(ids)} deployments for {len(clusters)} clusters: {', '.join(clusters)}; runs: {where}")
    srv = sink = None
    if opts.receiver:
        assert opts.token
        mapping = Mapping(frozenset(MIXIN_ALERTS + opts.alert_names), opts.alert_label, frozenset(clusters))
        sink = PrefectSink(ids["recover"])
        receiver = Receiver(ReceiverConfig(opts.token, mapping, opts.data / INCIDENTS_FILE), sink)
        srv = make_server(
            opts.host, opts.receiver_port, receiver, Metrics(clusters, ids, sink.runs_of, receiver)
        )
        start(srv)
        say(
            f"alert receiver: POST http://{opts.host}:{opts.receiver_port}/alerts/alertmanager, "
            f"metrics: GET http://{opts.host}:{opts.receiver_port}/metrics"
        )
    say(f"UI: {opts.ui_url}")
    stop = asyncio.Event()
    # with a work pool the runs are the workers'; this process only waits for its signal
    task = asyncio.create_task(runner.start() if not opts.work_pool else asyncio.Event().wait())
    await asyncio.sleep(0)  # runner.start() installs its own SIGTERM handler first; ours replaces it
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        done, _ = await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # the runner ended by itself: say why
        say("stopping")
        if opts.work_pool:
            task.cancel()
        with contextlib.suppress(RuntimeError):  # not started yet
            await runner.astop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, STOP_GRACE_S)
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if sink is not None:
            sink.close()


async def _to_work_pool(served: list, pool: str) -> dict[str, object]:
    """The deployments registered for a process work pool (created if missing): a worker on any
    machine (`prefect worker start --pool POOL`) with etcd-dr installed runs them, in
    `$ETCD_DR_HOME` (its environment), as deployments/prefect.yaml does."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as c:
        with contextlib.suppress(ObjectAlreadyExists):
            await c.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        ids: dict[str, object] = {}
        for d in served:
            # a module, imported from the worker's installed package: not a path relative to where this
            # process started, and not a script (Prefect would put console/ first on sys.path, where
            # console/flows.py hides the `flows` package: ModuleNotFoundError 'flows.add_learner')
            d.entrypoint = f"console.flows:{d.entrypoint.rsplit(':', 1)[1]}"
            ids[d.name] = dep_id = await d.apply(work_pool_name=pool)
            home = {"directory": "{{ $ETCD_DR_HOME }}"}
            steps = [{"prefect.deployments.steps.set_working_directory": home}]
            await c.update_deployment(dep_id, DeploymentUpdate(pull_steps=steps))
        return ids


def _limits_and_automations(clusters: dict[str, Cluster], recover_id: object) -> None:
    """Per cluster: the recovery's concurrency limit (1 slot) and the automation that runs the
    recover deployment for it when its incident opens (replaced on every start: the inventory may
    have changed whether recovery is automatic)."""
    from datetime import timedelta

    from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment
    from prefect.client.orchestration import get_client

    from console.receiver import EVENT_OPENED, resource_id
    from flows.recover import ensure_concurrency_limit

    with get_client(sync_client=True) as c:
        for cl in clusters.values():
            ensure_concurrency_limit(cl.name)
            for old in c.read_automations_by_name(automation_name(cl.name)):
                c.delete_automation(old.id)
            c.create_automation(
                AutomationCore(
                    name=automation_name(cl.name),
                    description=f"An alert incident of cluster {cl.name} starts its recovery"
                    + (" without approval (automatic_recovery: true)" if cl.automatic_recovery else
                       ", which waits for approval"),
                    trigger=EventTrigger(
                        expect={EVENT_OPENED},
                        match={"prefect.resource.id": resource_id(cl.name)},
                        posture=Posture.Reactive,
                        threshold=1,
                        within=timedelta(0),
                    ),
                    actions=[
                        RunDeployment(
                            source="selected",
                            deployment_id=recover_id,
                            parameters={
                                "cluster": cl.name,
                                "approve": cl.automatic_recovery,
                                "incident": "{{ event.payload.incident }}",
                            },
                        )
                    ],
                )
            )  # fmt: skip
