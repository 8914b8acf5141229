"""The bounded-run harness the hostile-input tests rely on tells a clean end from a dying one."""
from __future__ import annotations

from tests.bounded import MIB, run_bounded


def test_a_call_that_returns_is_clean_and_reports_its_value() -> None:
    outcome = run_bounded("builtins:len", "abc")
    assert outcome.kind == "returned" and outcome.value == 3 and outcome.clean()


def test_an_allocation_past_the_limit_is_a_memory_error_and_never_clean() -> None:
    outcome = run_bounded("builtins:bytearray", 600 * MIB, memory_mib=256)
    assert outcome.kind == "raised" and outcome.error == "MemoryError"
    assert not outcome.clean("MemoryError")


def test_a_child_that_exits_without_reporting_died() -> None:
    outcome = run_bounded("os:_exit", 3)
    assert outcome.kind == "died" and outcome.returncode == 3 and not outcome.clean()


def test_a_child_over_its_time_limit_died() -> None:
    outcome = run_bounded("time:sleep", 5, seconds=1)
    assert outcome.kind == "died" and not outcome.clean()


def test_an_expected_error_is_clean_and_an_unexpected_one_is_not() -> None:
    outcome = run_bounded("builtins:int", "x")
    assert outcome.clean("ValueError") and not outcome.clean("KeyError")


def test_the_peak_is_the_childs_own_not_the_parents() -> None:
    ballast = bytearray(300 * MIB)  # a parent holding much more than the child ever will
    ballast[::4096] = b"x" * len(ballast[::4096])
    outcome = run_bounded("builtins:len", "abc")
    assert outcome.peak_bytes < 200 * MIB, outcome.peak_bytes // MIB
    grown = run_bounded("tests.test_bounded:hold", 150)
    assert grown.peak_bytes - grown.baseline_bytes >= 140 * MIB
    del ballast


def hold(mib: int) -> int:
    """Touch `mib` MiB, so the child's peak must show it."""
    block = bytearray(mib * MIB)
    block[::4096] = b"y" * len(block[::4096])
    return len(block)
