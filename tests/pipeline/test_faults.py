"""Failure injection: rules parse strictly, fire at their threshold, and only for their source and stage."""
from __future__ import annotations

import pytest

from kasparro.config import ConfigError
from kasparro.errors import InjectedFault
from kasparro.pipeline import faults


def test_a_rule_names_source_stage_threshold_and_action() -> None:
    assert faults.parse("daily:load:100:exit, paprika:extract:0") == (
        faults.Fault("daily", "load", 100, "exit"), faults.Fault("paprika", "extract", 0, "raise"))
    assert faults.parse("") == ()


@pytest.mark.parametrize("rule", ["daily:load", "daily:publish:1", "daily:load:many", "daily:load:1:explode"])
def test_a_malformed_rule_is_refused_at_start_up(rule: str) -> None:
    with pytest.raises(ConfigError, match="FAULT_INJECTION"):
        faults.parse(rule)


def test_a_fault_fires_once_its_stage_has_written_enough_records_for_its_source() -> None:
    rules = faults.parse("daily:load:100")

    faults.check(rules, "daily", "load", 99)
    faults.check(rules, "daily", "transform", 1000)
    faults.check(rules, "other", "load", 1000)
    with pytest.raises(InjectedFault, match="load of daily after 100 records") as raised:
        faults.check(rules, "daily", "load", 100)
    assert raised.value.transient is False
