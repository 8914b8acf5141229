"""Inject failures on purpose, to show that the pipeline recovers from them (tests and demos only).

FAULT_INJECTION holds rules separated by commas, each `source:stage:after[:action]`:
- `stage` is extract, transform or load;
- `after` is how many records that stage has written for the source in this
  task before the fault fires (0: before the first batch);
- `action` is `raise` (default: the stage fails with InjectedFault, a terminal
  error, so the source run fails and the next run resumes from the checkpoint)
  or `exit` (the whole worker process dies at once, as with a power cut or an
  OOM kill: the pool process and its parent are killed with SIGKILL).
Example: `csv_daily_2019:load:100:exit`. Refused unless APP_ENV is development or test (kasparro.config.check_safety).
"""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from kasparro.config import ConfigError
from kasparro.errors import InjectedFault

logger = logging.getLogger(__name__)

STAGES = ("extract", "transform", "load")
ACTIONS = ("raise", "exit")


@dataclass(frozen=True)
class Fault:
    """One rule: fail `stage` of `source` once it has written `after` records."""

    source: str
    stage: str
    after: int
    action: str = "raise"


def parse(value: str) -> tuple[Fault, ...]:
    """Parse FAULT_INJECTION strictly, so a typo fails at start-up instead of injecting nothing."""
    faults = []
    for rule in filter(None, (part.strip() for part in value.split(","))):
        parts = rule.split(":")
        if len(parts) not in (3, 4) or parts[1] not in STAGES or not parts[2].isdigit() \
                or (len(parts) == 4 and parts[3] not in ACTIONS):
            raise ConfigError(f"FAULT_INJECTION rule {rule!r} is not source:stage:after[:action] with stage in "
                              f"{STAGES} and action in {ACTIONS}")
        faults.append(Fault(parts[0], parts[1], int(parts[2]), parts[3] if len(parts) == 4 else "raise"))
    return tuple(faults)


def check(faults: tuple[Fault, ...], source: str, stage: str, records: int) -> None:
    """Fire the first rule for this source and stage whose threshold `records` has reached."""
    for fault in faults:
        if (fault.source, fault.stage) == (source, stage) and records >= fault.after:
            _fire(fault, records)


def _fire(fault: Fault, records: int) -> None:
    message = f"injected fault: {fault.stage} of {fault.source} after {records} records ({fault.action})"
    logger.error(message)
    if fault.action == "exit":
        _kill_worker()
    raise InjectedFault(message, source=fault.source)


def _kill_worker() -> None:
    # Under the prefork pool this process's parent is the worker's main process: kill it first so
    # nothing acknowledges or requeues the task, then the other pool processes, then this one.
    parent = os.getppid()
    if _is_celery(parent):
        os.kill(parent, signal.SIGKILL)
        for sibling in _children(parent):
            if sibling != os.getpid():
                os.kill(sibling, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _is_celery(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"celery" in handle.read()
    except OSError:
        return False
