"""`python -m kasparro.procfile [-f Procfile] [PROCESS...]`: run a Procfile in the foreground, as `honcho start` does.

The output is honcho's (`12:00:01 api.1 | line`) unless `LOG_FORMAT=json`: then what comes out is JSON lines
only, so a collector can read `make run` whole. A process's JSON line is passed on with the process's name
added as `service`; honcho's own notices (started, stopped, SIGINT received) become JSON lines with the same
fields as everyone's. A line that is not JSON keeps honcho's prefix: it is a bug to fix in that process, and
the test of `make run` fails on it (tests/test_make_run_logs.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

from honcho.environ import expand_processes, parse_procfile
from honcho.manager import SYSTEM_PRINTER_NAME, Manager
from honcho.printer import Message, Printer

from kasparro.logformat import handler, wants_json

# honcho's default: process type N's first process gets PORT=5000 + 100 * N, as under `honcho start`.
DEFAULT_PORT = 5000
# What honcho's Manager returns after it received SIGINT or SIGTERM.
STOPPED_AS_ASKED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class JsonPrinter:
    """Print each process's JSON lines with its name added, and honcho's notices as JSON lines of our own."""

    width = 0  # set by the Manager; only honcho's prefixed form uses it

    def __init__(self) -> None:
        self._notices = logging.getLogger("kasparro.procfile")
        self._notices.propagate = False
        self._notices.setLevel(logging.INFO)
        # Replaced, not added to: a second printer in one process must not print each notice twice.
        self._notices.handlers = [handler("json", stream=sys.stdout)]

    def write(self, message: Message) -> None:
        """Print one message (possibly several lines) from a process or from honcho itself."""
        text = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else message.data
        for line in text.splitlines():
            if message.name == SYSTEM_PRINTER_NAME:
                self._notices.info(line, extra={"service": SYSTEM_PRINTER_NAME})
            else:
                print(_with_service(line, message.name), flush=True)


class OneMessageAtATime:
    """Hand messages to a printer one at a time, even when a signal handler prints in the middle of one.

    honcho prints "SIGINT received" from its signal handler, which Python runs between any two bytecodes of
    the main thread, also between `print`'s write of a line and its write of the newline. Two processes'
    lines then came out as one line that is not JSON (the fresh-clone CI of 7e25cf0). A message that arrives
    while another is being printed waits in a queue and goes out right after it.
    """

    def __init__(self, printer: Any) -> None:
        self._printer = printer
        self._pending: deque[Message] = deque()
        self._writing = False

    @property
    def width(self) -> int:
        return self._printer.width

    @width.setter
    def width(self, value: int) -> None:
        # The Manager sets this to the longest process name; honcho's Printer pads names with it.
        self._printer.width = value

    def write(self, message: Message) -> None:
        """Print the message now, or right after the one being printed if this call interrupted it."""
        self._pending.append(message)
        while not self._writing and self._pending:
            self._writing = True
            try:
                while self._pending:
                    self._printer.write(self._pending.popleft())
            finally:
                # Cleared before the loop looks again: a message queued by a handler that ran after the
                # inner loop saw an empty queue is still printed, here or by that handler itself.
                self._writing = False


def _with_service(line: str, name: str) -> str:
    try:
        record: Any = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"{name} | {line}"
    return json.dumps({**record, "service": name}, ensure_ascii=False)


def main(argv: list[str]) -> int:
    """Start the Procfile's processes (or those named); return when they have all stopped."""
    parser = argparse.ArgumentParser(prog="python -m kasparro.procfile")
    parser.add_argument("-f", "--procfile", default="Procfile")
    parser.add_argument("processes", nargs="*", help="process types to start (default: all)")
    args = parser.parse_args(argv)
    declared = parse_procfile(Path(args.procfile).read_text()).processes
    unknown = set(args.processes) - set(declared)
    if unknown:
        parser.error(f"not in {args.procfile}: {', '.join(sorted(unknown))}")
    chosen = {name: cmd for name, cmd in declared.items() if not args.processes or name in args.processes}
    manager = Manager(OneMessageAtATime(JsonPrinter() if wants_json(os.environ) else Printer(sys.stdout)))
    port = int(os.environ.get("PORT") or DEFAULT_PORT)
    for process in expand_processes(chosen, port=port):
        manager.add_process(process.name, process.cmd, quiet=process.quiet, env={**os.environ, **process.env})
    manager.loop()
    # Ctrl-C or SIGTERM stops everything as asked: 0, so make adds no "*** Error 130" line of its own after
    # the last JSON one. A process that ended by itself (and stopped the others) gives its own code.
    return 0 if manager.returncode in STOPPED_AS_ASKED else manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
