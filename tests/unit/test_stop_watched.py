"""The Docker member's watched stop (etcd_dr.recovery.steps: _STOP_WATCHED, read by
read_stop_watched), run with the local shell against a fake `docker` that keeps one container's
state in files: what the script prints and how it is read, for each way a stop ends. The real
docker and etcd are in tests/lab/test_recover_leader_stop.py; this covers the orders of events a
lab run shows only now and then (a drain that ends before the log line reaches the watcher)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from etcd_dr.executor import LocalExecutor
from etcd_dr.recovery.steps import WatchedStop, read_stop_watched, stop_watched_script
from etcd_dr.runtime import DockerRuntime

# One container: `stop` exits it with 0 after $DRAIN_S unless it was killed (then `kill` wrote
# 137); `logs -f` prints $LINE after $LINE_AFTER_S and ends when the container exits, as docker's
# does; `kill` of an exited container fails with docker's message.
_FAKE_DOCKER = r"""#!/bin/sh
s=$FAKE_STATE
case $1 in
  logs)
    [ "$2" = -f ] || { cat "$s/past" 2>/dev/null; exit 0; }
    sleep "$LINE_AFTER_S"; [ -n "$LINE" ] && echo "$LINE"
    while [ ! -f "$s/exit" ]; do sleep 0.01; done ;;
  stop)
    end=$(awk "BEGIN{print $DRAIN_S * 100}")
    i=0; while [ $i -lt "$end" ] && [ ! -f "$s/exit" ]; do sleep 0.01; i=$((i + 1)); done
    [ -f "$s/exit" ] || { [ "$STOP_ENDS" = killed ] && echo 137 || echo 0; } > "$s/exit" ;;
  kill)
    if [ -f "$s/exit" ]; then echo "Error response from daemon: Container $2 is not running" >&2; exit 1; fi
    echo 137 > "$s/exit"; echo "$2" ;;
  inspect)
    case $3 in
      *Running*) [ -f "$s/exit" ] && echo false || echo true ;;
      *ExitCode*) cat "$s/exit" ;;
    esac ;;
esac
"""


class _Fake:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.state.mkdir()
        self.docker = tmp / "docker"
        self.docker.write_text(_FAKE_DOCKER)
        self.docker.chmod(0o755)

    def run(self, *, line: str, line_after_s: float, drain_s: float, stop_ends: str = "exited") -> str:
        rt = DockerRuntime(LocalExecutor(), "etcd", docker=str(self.docker))  # only its names are used
        env = {
            "PATH": "/usr/bin:/bin",
            "FAKE_STATE": str(self.state),
            "LINE": line,
            "LINE_AFTER_S": f"{line_after_s:g}",
            "DRAIN_S": f"{drain_s:g}",
            "STOP_ENDS": stop_ends,
        }
        r = subprocess.run(
            ["sh", "-c", stop_watched_script(rt, 30), "stop", "30", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout


@pytest.fixture
def fake(tmp_path: Path) -> _Fake:
    return _Fake(tmp_path)


def test_a_server_close_seen_during_the_drain_kills_it(fake: _Fake) -> None:
    out = fake.run(line="... stopping serving peer traffic ...", line_after_s=0.05, drain_s=2)
    assert out.splitlines() == ["closed", "stopped 137"]
    assert read_stop_watched(out) == (WatchedStop.CLOSED, None, 137)


def test_a_drain_over_before_the_line_arrives_is_said_so(fake: _Fake) -> None:
    # the one CI run of 2026-12-06: the line reached `docker logs -f` after etcd had exited 0
    out = fake.run(line="... stopping serving peer traffic ...", line_after_s=0.2, drain_s=0.02)
    assert out.splitlines() == ["closed", "stopped 0"]
    assert read_stop_watched(out) == (WatchedStop.CLOSED, None, 0)


def test_no_line_is_a_stop_by_itself(fake: _Fake) -> None:
    # etcd 3.4's capnslog logs no "stopping serving peer traffic"
    out = fake.run(line="", line_after_s=0, drain_s=0.1)
    assert read_stop_watched(out) == (WatchedStop.STOPPED, None, 0)


def test_dockers_own_kill_after_the_timeout_is_timed_out(fake: _Fake) -> None:
    out = fake.run(line="", line_after_s=0, drain_s=0.1, stop_ends="killed")
    assert read_stop_watched(out) == (WatchedStop.TIMED_OUT, None, 137)


def test_a_campaign_during_the_stop_kills_it(fake: _Fake) -> None:
    line = "raft2026/12/06 06:40:00 INFO: 8e9e05c52164694d became candidate at term 7"
    out = fake.run(line=line, line_after_s=0.05, drain_s=5)
    assert read_stop_watched(out) == (WatchedStop.CAMPAIGNED, "became candidate at term 7", 137)
