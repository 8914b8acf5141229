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
