"""console/flows.py: what every run's process imports (the deployments' entrypoint module), and the
rehearsal's scenario names it gives without importing the rehearsal."""

from __future__ import annotations

import subprocess
import sys
import typing

from console import flows
from etcd_dr.lab.rehearsal.scenarios import Scenario


def test_the_scenario_names_are_the_rehearsals() -> None:
    assert list(typing.get_args(flows.ScenarioName)) == [s.value for s in Scenario]


def test_a_run_loads_no_other_flow_than_its_own() -> None:
    """An alert's recover run loads console.flows first: it must not import the other flows' code."""
    code = "import console.flows, sys; print('\\n'.join(sorted(sys.modules)))"
    mods = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "flows.recover" in mods
    for m in (
        "flows.rehearse",
        "flows.snapshot",
        "flows.add_learner",
        "flows.check",
        "flows.hosts",
        "flows.status",
        "etcd_dr.lab.rehearsal.scenarios",
        "etcd_dr.rejoin.run",
        "console.metrics",
    ):
        assert m not in mods, m
