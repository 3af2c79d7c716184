"""The test files, longest first, for the quick loop (a pytest plugin, loaded by tests/conftest.py).

The quick loop runs under xdist's `--dist loadfile`: a worker takes a whole file, the next free worker
the next file. xdist orders the files by their number of tests, which says little about their time
here (they wait on etcd's elections and the watcher's timeouts): a file of four tests that wait 35 s
started last and held its worker while the others idled. `--longest-first` orders them by the times
in tests/file_durations.json instead; `--store-durations` writes the times of the files a run ran
into that file. The whole suite keeps xdist's order: its lab files share one lab per worker, and
were written and checked in that order (README "Set up and run").
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("file_durations.json")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _known() -> dict[str, float]:
    try:
        return json.loads(DURATIONS.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise pytest.UsageError(
            f"{DURATIONS}: not the JSON of file times ({e}); `git checkout tests/{DURATIONS.name}`, "
            "or delete it and run with --store-durations"
        ) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--longest-first",
        action="store_true",
        help=f"run the test files longest first, by their times in {DURATIONS.name}",
    )
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each test file's time in this run into {DURATIONS.name} (the order of the next runs)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("longest_first") and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist's own order (most tests first) would undo ours
    if config.getoption("store_durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(), "file-durations-recorder")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("longest_first"):
        return
    known = _known()
    unmeasured = max(known.values(), default=0.0)  # a new file goes early until it has been measured
    # a stable sort: each file's tests stay together and in their own order
    items.sort(key=lambda item: -known.get(_file(item.nodeid), unmeasured))


class _Recorder:
    """On the controller (xdist's workers send it their reports): setup, call and teardown summed
    per file, merged into the stored times at the end of a run that was not interrupted."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[_file(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or not self.seconds:
            return
        merged = _known() | {f: round(s, 1) for f, s in self.seconds.items()}
        DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")
