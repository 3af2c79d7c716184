"""The one exit-code mapping (etcd_dr/cli/result.py) gives every command the codes the README
documents; the core's results carry none of their own."""

from __future__ import annotations

import pytest

from etcd_dr.cli.result import Exit, emit, exit_for
from etcd_dr.cli.status import EXIT_CODES
from etcd_dr.plans import Plan, Refusal
from etcd_dr.recovery.plan import RecoveryPath
from etcd_dr.recovery.run import RecoverResult, RecoverStatus
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


# what `etcd-dr recover` exits with, by status (README "Commands"); a refusal without its closed
# reason predates Refusal: bad input, as recover always said
RECOVER_CODES = {
    RecoverStatus.RECOVERED: 0,
    RecoverStatus.PLANNED: 0,
    RecoverStatus.REFUSED: 2,
    RecoverStatus.NOT_CONFIRMED: 2,
    RecoverStatus.BUSY: 1,
    RecoverStatus.STALE: 1,
    RecoverStatus.FAILED: 1,
}


def test_refusals_map_to_bad_input_or_failed() -> None:
    assert {r: int(exit_for(r)) for r in Refusal} == {Refusal.BAD_INPUT: 2, Refusal.UNSAFE: 1}
    assert not any(hasattr(r, "exit_code") for r in Refusal)  # the core carries no exit code


@pytest.mark.parametrize("status", list(RecoverStatus))
@pytest.mark.parametrize("refusal", [None, *Refusal])
def test_recover_results_map_by_status_and_refusal(status: RecoverStatus, refusal: Refusal | None) -> None:
    plan = Plan("recover", "lab", "why", refusal=refusal)
    res = RecoverResult(status, "why", plan, next(iter(RecoveryPath)))
    if status is RecoverStatus.REFUSED and refusal is not None:
        assert exit_for(res) == exit_for(refusal)  # quorum held, a voter not fenced: 1; bad input: 2
    else:
        assert exit_for(res) == RECOVER_CODES[status]
    assert not hasattr(res, "exit_code")


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
