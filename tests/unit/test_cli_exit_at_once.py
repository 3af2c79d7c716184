"""`etcd-dr snapshot` (take) leaves without the interpreter's teardown (etcd_dr.cli.run: 50-60 ms of
a ~1.1 s snapshot); what it printed and its exit code must survive that. The success path with its
--json on stdout: tests/snapshots/test_take_verify.py (test_cli_snapshot_json_list_and_verify)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from etcd_dr.cli import build_parser


def _at_once(argv: list[str]) -> bool:
    return bool(getattr(build_parser(argv).parse_args(argv), "exit_at_once", False))


def test_only_take_exits_at_once() -> None:
    assert _at_once(["snapshot", "-i", "x"])
    assert _at_once(["snapshot", "take", "-i", "x"])
    for argv in (["snapshot", "list"], ["snapshot", "prune"], ["snapshot", "verify", "x"]):
        assert not _at_once(argv), argv  # a subparser inherits the take's defaults unless it says
    assert not _at_once(["status"])


def test_bad_input_still_said_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    p = subprocess.run(
        [sys.executable, "-m", "etcd_dr.cli", "snapshot", "-i", str(missing), "--no-verify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert f"{missing}: no such file" in p.stderr
