"""Fixtures shared by every suite."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

pytest_plugins = ["tests.file_order"]  # --longest-first and --store-durations

CACHE = Path(__file__).resolve().parent.parent / ".cache"


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _migrated(db: Path) -> bool:
    """The database holds Prefect's migrations (alembic's version row), read without changing it."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:  # not a database, or no such table
        return False
    finally:
        con.close()


def drain_events_worker() -> None:
    """Delivers and stops Prefect's events workers. Prefect keeps one per client type, not per API
    URL (`EventsWorker.instance`): one made while PREFECT_API_URL named another server (a console's)
    keeps sending this process's later events there, and once that server is gone the task runs of
    the flows that follow never reach the harness's (one CI run: `test_hostrepair_flow` after
    `test_receiver`'s concurrency slot, reproduced by running the two in that order). Call it
    before that other server stops; the next event starts a worker for the URL in force."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30, at_exit=False)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory) -> Iterator[None]:
    """A real Prefect server (subprocess, SQLite) for the session, as prefect_test_harness does, but
    on a copy of an already migrated database: a fresh one costs ~13 s of migrations, a copy ~5 s.
    The template is made once per Prefect version (clean: a server started on it and stopped)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import prefect
    import prefect.context
    import prefect.settings as ps
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.testing.utilities import _find_available_port

    def serve(db: Path, stack: ExitStack) -> SubprocessASGIServer:
        stack.enter_context(temporary_database_interface())
        stack.enter_context(
            ps.temporary_settings(updates={ps.PREFECT_SERVER_DATABASE_CONNECTION_URL: _sqlite_url(db)})
        )
        server = SubprocessASGIServer(port=_find_available_port())
        server.start(timeout=90)
        return server

    template = CACHE / f"prefect-template-{prefect.__version__}.db"
    CACHE.mkdir(parents=True, exist_ok=True)
    # xdist's workers start their sessions together: one makes the template, the others wait for it.
    # Without the lock two workers shared one `.part` (one unlinked it under the other's server) and
    # an empty template was kept: every later session then migrated its copy (5.5 s -> 12-17 s).
    with open(CACHE / "prefect-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _migrated(template):
            part = template.with_name(f"{template.name}.{os.getpid()}.part")
            try:
                with ExitStack() as stack:
                    serve(part, stack).stop()
                # the migrations sit in the write-ahead log until a checkpoint: fold them into the
                # file, and leave WAL mode, so that reading it (above) makes no -wal or -shm beside
                # it (Prefect sets WAL again on the copy it opens)
                con = sqlite3.connect(part)
                con.execute("PRAGMA journal_mode=DELETE")
                con.close()
                if not _migrated(part):
                    raise RuntimeError(f"{part}: Prefect's server started on it; no migrations in it")
                part.replace(template)
            finally:  # ours alone (the pid in its name): nothing of a failed attempt stays
                for leftover in (part, Path(f"{part}-wal"), Path(f"{part}-shm")):
                    leftover.unlink(missing_ok=True)
    db = tmp_path_factory.mktemp("prefect") / "prefect.db"
    shutil.copyfile(template, db)
    with ExitStack() as stack:
        server = serve(db, stack)
        # flows looking for the default ephemeral server must find this one (as prefect's harness does)
        prior = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server
        stack.enter_context(ps.temporary_settings(updates={ps.PREFECT_API_URL: server.api_url}))
        stack.enter_context(
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context())
        )
        drain_events_worker()  # one made before the harness sends elsewhere
        try:
            yield
        finally:
            drain_events_worker()
            server.stop()
            if prior is None:
                SubprocessASGIServer._instances.pop(None, None)
            else:
                SubprocessASGIServer._instances[None] = prior
