"""`make run`'s output is whole lines, even when a signal arrives in the middle of one.

honcho prints "SIGINT received" from its signal handler, and Python runs that handler between any two bytecodes,
also between the write of a process's line and the write of its newline. The two lines then came out as one
(the fresh-clone CI of 7e25cf0 saw `{...api...}{...SIGINT received...}` and an empty line). These tests raise a
real signal after random writes of random process lines and read what came out.
"""
from __future__ import annotations

import io
import json
import random
import re
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from honcho.manager import SYSTEM_PRINTER_NAME
from honcho.printer import Message, Printer

from kasparro.procfile import JsonPrinter, OneMessageAtATime

LINES = 400


class SignalledStdout(io.StringIO):
    """A stdout that raises SIGUSR1 right after some writes of process lines, before the rest of the line."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng
        self.in_handler = False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.in_handler and self._rng.random() < 0.3:
            signal.raise_signal(signal.SIGUSR1)  # its handler runs before this method returns
        return written


def process_lines(rng: random.Random) -> list[str]:
    """Random JSON log lines, some long, some with quotes, braces and non-ASCII text in their message."""
    alphabet = 'ab{}"\\ é€😀:,'
    return [json.dumps({"time": f"t{n}", "level": "INFO", "name": "kasparro.tasks", "message":
                        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))), "n": n},
                       ensure_ascii=False) for n in range(LINES)]


@pytest.fixture()
def signalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], tuple[SignalledStdout, list[str]]]]:
    """Return a function that prints random process lines through a printer while signals interrupt it."""
    previous = signal.getsignal(signal.SIGUSR1)

    def run(make_printer: Any) -> tuple[SignalledStdout, list[str]]:
        rng = random.Random(20261207)
        stdout = SignalledStdout(rng)
        monkeypatch.setattr(sys, "stdout", stdout)
        printer = make_printer(stdout)
        notices = iter(range(10**6))

        def as_honcho_does(signum: int, frame: Any) -> None:  # honcho's _terminate: a notice of its own
            stdout.in_handler = True
            try:
                printer.write(Message("line", f"SIGINT received {next(notices)}\n", datetime.now(),
                                      SYSTEM_PRINTER_NAME, None))
            finally:
                stdout.in_handler = False

        signal.signal(signal.SIGUSR1, as_honcho_does)
        lines = process_lines(rng)
        for line in lines:
            printer.write(Message("line", (line + "\n").encode(), datetime.now(), "api.1", None))
        return stdout, lines

    yield run
    signal.signal(signal.SIGUSR1, previous)


def test_in_json_every_line_is_one_json_object_and_no_line_is_lost_or_doubled(signalled: Any) -> None:
    stdout, sent = signalled(lambda out: OneMessageAtATime(JsonPrinter()))
    printed = stdout.getvalue().split("\n")
    assert printed[-1] == ""  # the output ends with a newline
    records = []
    for line in printed[:-1]:
        record = json.loads(line)  # raises on two objects in one line, or on an empty line
        assert isinstance(record, dict)
        records.append(record)

    mine = [r for r in records if r["name"] == "kasparro.tasks"]
    assert [r["n"] for r in mine] == list(range(LINES))
    assert [json.dumps({k: v for k, v in r.items() if k != "service"}, ensure_ascii=False) for r in mine] == sent
    notices = [r["message"] for r in records if r["name"] == "kasparro.procfile"]
    assert len(notices) > LINES / 10, "the signal interrupted too few writes to prove anything"
    assert notices == [f"SIGINT received {n}" for n in range(len(notices))]


def test_in_honchos_format_every_line_has_its_prefix_and_no_line_is_lost_or_doubled(signalled: Any) -> None:
    stdout, sent = signalled(lambda out: OneMessageAtATime(Printer(out, colour=False)))
    printed = stdout.getvalue().split("\n")
    assert printed[-1] == ""
    prefixed = [re.fullmatch(r"\d\d:\d\d:\d\d (\S+) *\| (.*)", line) for line in printed[:-1]]
    assert all(prefixed), [line for line, match in zip(printed, prefixed) if not match][:5]
    assert [m.group(2) for m in prefixed if m.group(1) == "api.1"] == sent
    notices = [m.group(2) for m in prefixed if m.group(1) == SYSTEM_PRINTER_NAME]
    assert len(notices) > LINES / 10
    assert notices == [f"SIGINT received {n}" for n in range(len(notices))]
