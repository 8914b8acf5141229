"""Print the bench's tables and write its JSON result file."""
from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import data
from bench.scenario import RunResult, Scenario

TARGET_RATIO, STRETCH_RATIO, RERUN_TARGET = 8.0, 6.0, 0.05
# Each summary row: label, how to read it off a scenario, and how to print one value.
METRICS: tuple[tuple[str, Callable[[Scenario], float | None], str], ...] = (
    ("COPY baseline, s", lambda s: s.copy_s, "{:.2f}"),
    ("first run, s", lambda s: _run(s, 0).seconds, "{:.2f}"),
    ("first run vs COPY, x", lambda s: _run(s, 0).seconds / s.copy_s, "{:.1f}x"),
    ("first run, rows/s", lambda s: s.settings.rows / _run(s, 0).seconds, "{:,.0f}"),
    ("worker CPU s (first run)", lambda s: _run(s, 0).cpu_worker, "{:.1f}"),
    ("postgres CPU s (first run)", lambda s: _run(s, 0).cpu_postgres, "{:.1f}"),
    ("busiest worker process, MiB", lambda s: _run(s, 0).peak_process_kib / 1024, "{:.0f}"),
    ("unchanged re-run, % of first", lambda s: 100 * _run(s, 1).seconds / _run(s, 0).seconds, "{:.1f}%"),
    ("appended run, % of first", lambda s: _appended_share(s), "{:.1f}%"),
)


def _run(scenario: Scenario, index: int) -> RunResult:
    return scenario.results[index]


def _appended_share(scenario: Scenario) -> float | None:
    if len(scenario.results) < 3:
        return None
    return 100 * scenario.results[2].seconds / scenario.results[0].seconds


def mib(kib: int) -> str:
    """Format KiB as whole MiB, or '-' when nothing was sampled."""
    return f"{kib / 1024:.0f}" if kib else "-"


def _result_line(result: RunResult, first: RunResult, copy_s: float) -> str:
    loaded = result.counts["inserted"] + result.counts["updated"]
    per_row = f"{loaded / result.seconds:10,.0f}" if loaded else f"{'-':>10}"
    ratio = f"{result.seconds / copy_s:8.1f}x" if result is first else f"{'':>9}"
    share = f"{result.seconds / first.seconds:7.1%}" if result is not first else f"{'':>7}"
    rss = f"{mib(result.peak_process_kib)}/{mib(result.peak_total_kib)}"
    cpu = f"{result.cpu_worker:.1f}/{result.cpu_postgres:.1f}"
    return f"{result.label:<34} {loaded:>10,} {result.seconds:9.2f} {per_row} {ratio} {share} {rss:>9} {cpu:>13}"


def _details(result: RunResult) -> list[str]:
    lines = []
    if result.stages:
        parts = ", ".join(f"{name} {secs:.2f}s ({secs / result.seconds:.0%})" for name, secs in result.stages.items())
        lines.append(f"{'':<4}stages: queue wait {result.queued:.2f}s, {parts}")
    c = result.counts
    lines.append(f"{'':<4}counts: extracted {c['extracted']:,}, inserted {c['inserted']:,}, updated {c['updated']:,},"
                 f" unchanged/skipped {c['skipped']:,}, rejected {c['rejected']:,}; status {result.status}")
    return lines


def _workers(settings: Any) -> str:
    if settings.nodes == 1:
        return f"worker -c {settings.workers}"
    return f"{settings.nodes} workers started apart (nodes), each -c {settings.workers}"


def print_scenario(scenario: Scenario) -> None:
    """Print one scenario's table: the baseline, each run, and the roadmap verdicts."""
    settings, results, copy_s = scenario.settings, scenario.results, scenario.copy_s
    batch = "unset (the kinds' own)" if settings.batch_size is None else settings.batch_size
    print(f"\nKasparro ETL bench: {settings.rows:,} rows ({scenario.file_mib:.1f} MiB), BATCH_SIZE "
          f"{batch}, {_workers(settings)}, {os.cpu_count()} CPUs")
    print(f"bench file {data.describe()}\n")
    if scenario.node_tasks:
        print(f"tasks finished per worker node: {', '.join(map(str, scenario.node_tasks))}\n")
    head = (f"{'step':<34} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'vs COPY':>9} {'of 1st':>7} "
            f"{'RSS MiB':>9} {'CPU s wkr/pg':>13}")
    print(head + "\n" + "-" * len(head))
    print(f"{'baseline: COPY into plain table':<34} {settings.rows:>10,} {copy_s:9.2f} "
          f"{settings.rows / copy_s:10,.0f} {'1.0x':>9}")
    for result in results:
        print("\n".join([_result_line(result, results[0], copy_s), *_details(result)]))
    print(f"\nCOPY timings (median used): {', '.join(f'{t:.2f}' for t in scenario.copy_all)} s. RSS = peak of the "
          f"busiest worker process / peak of the whole worker tree, sampled every 0.2 s (idle: "
          f"{mib(scenario.idle_kib[0])} MiB tree).\n"
          "CPU s = CPU seconds used during the run by the worker tree / by this database's postgres backends\n"
          "plus the server's WAL writer, checkpointer and background writer.")
    if len(results) >= 2:
        print(_verdict(scenario))


def _verdict(scenario: Scenario) -> str:
    first, rerun = scenario.results[0], scenario.results[1].seconds / scenario.results[0].seconds
    ratio = first.seconds / scenario.copy_s
    line = (f"roadmap: end to end within {TARGET_RATIO:.0f}x of COPY -> {ratio:.1f}x, "
            f"{'met' if ratio <= TARGET_RATIO else 'missed'} (stretch {STRETCH_RATIO:.0f}x "
            f"{'met' if ratio <= STRETCH_RATIO else 'missed'}); unchanged re-run under {RERUN_TARGET:.0%} of the "
            f"first -> {rerun:.1%}, {'met' if rerun < RERUN_TARGET else 'missed'}")
    share = _appended_share(scenario)
    if share is not None:
        line += (f"\nincremental: {scenario.settings.appended:,} appended rows ({scenario.settings.append_pct:g}%) "
                 f"took {share:.1f}% of the first run")
    return line


def summarise(scenarios: Sequence[Scenario]) -> dict[str, dict[str, float]]:
    """Return, per metric, the median, min and max over scenarios that completed their runs."""
    summary = {}
    for label, read, _ in METRICS:
        values = [v for v in (_read(read, s) for s in scenarios) if v is not None]
        if values:
            summary[label] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def _read(read: Callable[[Scenario], float | None], scenario: Scenario) -> float | None:
    try:
        return read(scenario)
    except (IndexError, ZeroDivisionError):
        return None  # a scenario that failed before this run


def print_summary(cells: Sequence[tuple[int, int, list[Scenario]]]) -> None:
    """Print one block per (rows, workers) cell: each metric's median, min and max over its repeats."""
    formats = {label: fmt for label, _, fmt in METRICS}
    print("\nSummary: median (min, max) over the repeats of each cell")
    for rows, workers, scenarios in cells:
        title = f"{rows:,} rows, {workers} worker process(es), {len(scenarios)} repeat(s)"
        print(f"\n{title:<46}{'median':>12} {'min':>12} {'max':>12}")
        for label, stats in summarise(scenarios).items():
            cells_text = " ".join(f"{formats[label].format(stats[k]):>12}" for k in ("median", "min", "max"))
            print(f"  {label:<44}{cells_text}")


def write_json(directory: Path, settings: dict[str, Any], cells: Sequence[tuple[int, int, Sequence[Any]]],
               ok: bool, summary: Callable[[Sequence[Any]], dict[str, Any]] = summarise,
               prefix: str = "result") -> Path:
    """Write every scenario and each cell's `summary` to `directory`/<prefix>-<UTC time>.json; return the path."""
    now = datetime.now(UTC)
    document = {
        "finished_at": now.isoformat(timespec="seconds"), "ok": ok, "settings": settings,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "cells": [{"rows": rows, "workers": workers, "summary": summary(scenarios),
                   "repeats": [s.to_json() for s in scenarios]} for rows, workers, scenarios in cells],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{prefix}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)
