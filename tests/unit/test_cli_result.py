"""The one exit-code mapping (etcd_dr/cli/result.py) gives every command the codes the README
documents, and agrees with the codes the core's results still carry."""

from __future__ import annotations

import pytest

from etcd_dr.cli.result import Exit, emit, exit_for
from etcd_dr.cli.status import EXIT_CODES
from etcd_dr.plans import Plan, Refusal
from etcd_dr.recovery.plan import RecoveryPath
from etcd_dr.recovery.run import EXIT, RecoverResult, RecoverStatus
from etcd_dr.state import Health


def test_the_documented_codes() -> None:
    assert [int(e) for e in Exit] == [0, 1, 2, 3, 130]
    assert exit_for(True) is Exit.OK and exit_for(False) is Exit.FAILED
    assert exit_for(Refusal.BAD_INPUT) == 2 and exit_for(Refusal.UNSAFE) == 1
    assert {h: int(c) for h, c in EXIT_CODES.items()} == {
        Health.QUORUM: 0,
        Health.NO_LEADER: 1,
        Health.QUORUM_LOST: 1,
        Health.FORKED: 3,
    }


@pytest.mark.parametrize("refusal", list(Refusal))
def test_refusals_agree_with_the_core(refusal: Refusal) -> None:
    assert exit_for(refusal) == refusal.exit_code


@pytest.mark.parametrize("status", list(RecoverStatus))
@pytest.mark.parametrize("refusal", [None, *Refusal])
def test_recover_results_agree_with_the_core(status: RecoverStatus, refusal: Refusal | None) -> None:
    plan = Plan("recover", "lab", "why", refusal=refusal)
    res = RecoverResult(status, "why", plan, next(iter(RecoveryPath)))
    assert exit_for(res) == res.exit_code
    if refusal is None:
        assert exit_for(res) == EXIT[status]


def test_an_unmapped_result_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match=r"cli/result\.py"):
        exit_for(object())


def test_emit_prints_json_or_text_and_builds_only_that(capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> str:
        raise AssertionError("text built for --json")

    emit(True, lambda: {"ok": True}, boom)
    assert capsys.readouterr().out == '{\n  "ok": true\n}\n'
    emit(False, lambda: {"ok": True}, lambda: "ok")
    emit(False, lambda: {}, lambda: None)  # nothing to add: nothing printed
    assert capsys.readouterr().out == "ok\n"
