"""Run one function in a child process under a memory and time limit, and say how it ended.

Hostile-input tests use this to assert the law "no process dies because of input": the parser runs with
`RLIMIT_AS` set (a worker past the limit would be killed by the kernel's OOM killer in production; here the
allocation fails instead, which the child reports), and the outcome is one of

- ``returned``: the function returned; ``value`` is what it returned (it must pickle),
- ``raised``: it raised; ``error`` is the exception's class name and ``message`` its text,
- ``died``: the child ended without reporting (a signal, an abort, a hard crash, or the time limit).

A ``MemoryError`` or ``RecursionError`` counts as ``raised`` but the tests treat it as a failure of the law:
use ``Outcome.clean`` to tell a clean end (returned, or raised one of the expected error types) from the rest.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Dying errors: a parser that raises one of these did not bound its input.
UNBOUNDED = ("MemoryError", "RecursionError", "UnicodeEncodeError", "UnicodeDecodeError", "OverflowError")

_CHILD = r"""
import importlib, pickle, resource, sys, traceback

def peak():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over from before exec.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

limit, target, args_path, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
module_name, _, attr = target.partition(":")
function = getattr(importlib.import_module(module_name), attr)
with open(args_path, "rb") as handle:
    args, kwargs = pickle.load(handle)
# The limit is set after the imports, so it bounds what the input costs, not what loading Flask costs.
used = peak()
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    value = function(*args, **kwargs)
    report = {"kind": "returned", "value": value}
except BaseException as error:
    report = {"kind": "raised", "error": type(error).__name__, "message": str(error)[:2000],
              "traceback": traceback.format_exc()[-4000:]}
report["peak_bytes"] = peak()
report["baseline_bytes"] = used
with open(out_path, "wb") as handle:
    pickle.dump(report, handle)
"""


@dataclass(frozen=True)
class Outcome:
    """How a bounded call ended."""

    kind: str
    value: Any = None
    error: str = ""
    message: str = ""
    traceback: str = ""
    peak_bytes: int = 0
    baseline_bytes: int = 0
    returncode: int | None = None
    stderr: str = ""

    def clean(self, *expected_errors: str) -> bool:
        """Whether the call returned, or raised one of `expected_errors` (never a dying error)."""
        if self.kind == "returned":
            return True
        return self.kind == "raised" and self.error in expected_errors and self.error not in UNBOUNDED

    def __str__(self) -> str:
        if self.kind == "returned":
            return f"returned (peak {self.peak_bytes // MIB} MiB)"
        if self.kind == "raised":
            return f"raised {self.error}: {self.message[:300]}\n{self.traceback}"
        return f"died (rc {self.returncode}): {self.stderr[-2000:]}"


def run_bounded(target: str, *args: Any, memory_mib: int = 1024, seconds: float = 60.0,
                **kwargs: Any) -> Outcome:
    """Call `module:function`(*args, **kwargs) in a child limited to `memory_mib` of address space."""
    with tempfile.TemporaryDirectory(prefix="kasparro-bounded-") as folder:
        args_path, out_path = Path(folder) / "args", Path(folder) / "out"
        args_path.write_bytes(pickle.dumps((args, kwargs)))
        env = {**os.environ, "ENV_FILE": "", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-c", _CHILD, str(memory_mib * MIB), target, str(args_path), str(out_path)]
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds)
        except subprocess.TimeoutExpired as expired:
            return Outcome("died", returncode=None, stderr=f"over the {seconds}s limit: {expired.stderr!r}")
        if not out_path.exists():
            return Outcome("died", returncode=done.returncode, stderr=done.stderr)
        report = pickle.loads(out_path.read_bytes())
        return Outcome(returncode=done.returncode, stderr=done.stderr, **report)
