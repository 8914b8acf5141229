"""Print the end-to-end bench's tables: each scenario's runs with where their time went, then each figure
against its goal (median, min, max over the repeats, PASS or MISS on the median)."""
from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import data
from bench.e2e import E2EScenario
from bench.http_run import HttpRun


@dataclass(frozen=True)
class Figure:
    """One figure of the summary: how to read it off a scenario, how to print it, and its goal if it has one."""

    label: str
    read: Callable[[E2EScenario], float | None]
    fmt: str
    goal: str = ""
    meets: Callable[[float], bool] | None = None


def _first(s: E2EScenario) -> HttpRun:
    found = s.run("first load")
    if found is None:
        raise LookupError("no first load")
    return found


def _share(label: str) -> Callable[[E2EScenario], float | None]:
    def read(s: E2EScenario) -> float | None:
        run = s.run(label)
        return None if run is None else 100 * run.seconds / _first(s).seconds
    return read


def rejected_ratio(s: E2EScenario) -> float | None:
    """Seconds per rejected row of the all-rejected run over seconds per loaded row of the first load."""
    run = s.run("all rows rejected")
    if run is None or not run.counts["rejected"]:
        return None
    first = _first(s)
    return (run.seconds / run.counts["rejected"]) / (first.seconds / first.counts["inserted"])


FIGURES: tuple[Figure, ...] = (
    Figure("baseline \\copy, s", lambda s: s.copy_s, "{:.2f}"),
    Figure("first load, s (POST to final seen)", lambda s: _first(s).seconds, "{:.2f}"),
    Figure("first load vs \\copy", lambda s: _first(s).seconds / s.copy_s, "{:.1f}x", "<= 6x", lambda v: v <= 6),
    Figure("first load, rows/s", lambda s: s.settings.rows / _first(s).seconds, "{:,.0f}"),
    Figure("first load: stack CPU s", lambda s: _first(s).cpu_worker, "{:.1f}"),
    Figure("first load: postgres CPU s", lambda s: _first(s).cpu_postgres, "{:.1f}"),
    Figure("unchanged re-run, % of first", _share("unchanged"), "{:.1f}%", "<= 5%", lambda v: v <= 5),
    Figure("appended run, % of first", _share("+"), "{:.1f}%", "<= 5%", lambda v: v <= 5),
    Figure("rejected s/row over loaded s/row", rejected_ratio, "{:.2f}x", "<= 2x", lambda v: v <= 2),
    Figure("first load: POST answered, s", lambda s: _first(s).post_s, "{:.3f}"),
    Figure("first load: first task seen started, s", lambda s: _first(s).started_s, "{:.2f}"),
    Figure("first load: queue wait (server clock), s", lambda s: _first(s).queued, "{:.2f}"),
    # From the server's finished_at to the poll that saw it; it also holds the POST's time before the run's
    # row existed, and the final transaction's length (PostgreSQL's now() is its start).
    Figure("first load: final seen after finished_at, s", lambda s: _lag(_first(s)), "{:.2f}"),
    Figure("stack start to ready, s", lambda s: s.ready_s, "{:.1f}"),
)


def _lag(run: HttpRun) -> float | None:
    return None if run.server_s is None else run.seconds - run.server_s


def _value(figure: Figure, scenario: E2EScenario) -> float | None:
    try:
        return figure.read(scenario)
    except (LookupError, ZeroDivisionError, TypeError):
        return None  # a scenario that failed before this run


def summarise_e2e(scenarios: Sequence[E2EScenario]) -> dict[str, dict[str, float | str | None]]:
    """Per figure: median, min, max over the scenarios that got that far, the goal and the median's verdict."""
    summary: dict[str, dict[str, float | str | None]] = {}
    for figure in FIGURES:
        values = [v for v in (_value(figure, s) for s in scenarios) if v is not None]
        if not values:
            continue
        median = statistics.median(values)
        verdict = None if figure.meets is None else ("PASS" if figure.meets(median) else "MISS")
        summary[figure.label] = {"median": median, "min": min(values), "max": max(values), "goal": figure.goal or None,
                                 "verdict": verdict}
    return summary


def _breakdown(run: HttpRun) -> str:
    seen = f"{run.started_s:.2f}s" if run.started_s is not None else "not seen"
    stages = ", ".join(f"{name} {secs:.2f}s" for name, secs in run.stages.items())
    server = f"{run.server_s:.2f}s" if run.server_s is not None else "-"
    return (f"    POST answered {run.post_s:.3f}s; first task started: seen at {seen}, recorded {run.queued:.2f}s "
            f"after the run; stages as polled: {stages}; final recorded at {server}, seen at {run.seconds:.2f}s "
            f"({run.polls} polls)")


def print_e2e_scenario(scenario: E2EScenario) -> None:
    """Print one scenario's runs, each with its counts and where its time went."""
    settings = scenario.settings
    batch = "unset (the kinds' own)" if settings.batch_size is None else settings.batch_size
    print(f"\nKasparro ETL end-to-end bench: {settings.rows:,} rows ({scenario.file_mib:.1f} MiB), BATCH_SIZE {batch}, "
          f"worker --concurrency={settings.workers}, {os.cpu_count()} CPUs; API, worker, beat, Flower and the fake "
          f"upstream as `make run` starts them")
    print(f"bench file {data.describe()}")
    for note in scenario.notes:
        print(f"note: {note}")
    head = f"{'step':<30} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'status':>8} {'CPU s stack/pg':>15}"
    print("\n" + head + "\n" + "-" * len(head))
    print(f"{'baseline: ' + scenario.copy_tool:<30} {settings.rows:>10,} {scenario.copy_s:9.2f} "
          f"{settings.rows / scenario.copy_s:10,.0f}")
    for run in scenario.results:
        rows = run.counts["rejected"] if run.label.startswith("all rows") else run.counts["inserted"]
        rate = f"{rows / run.seconds:10,.0f}" if rows else f"{'-':>10}"
        cpu = f"{run.cpu_worker:.1f}/{run.cpu_postgres:.1f}"
        print(f"{run.label:<30} {rows:>10,} {run.seconds:9.2f} {rate} {run.status:>8} {cpu:>15}")
        print(_breakdown(run))
    print(f"\n{scenario.copy_tool} timings (median used): {', '.join(f'{t:.2f}' for t in scenario.copy_all)} s. "
          "CPU s = CPU seconds used during the run by the whole stack's processes (API, worker, beat, Flower,\n"
          "upstream) / by this database's postgres backends plus the server's WAL writer, checkpointer and "
          "background writer.")


def print_e2e_summary(cells: Sequence[tuple[int, int, list[E2EScenario]]]) -> None:
    """Print each figure's median, min and max per cell, with its goal and PASS/MISS on the median."""
    formats = {f.label: f.fmt for f in FIGURES}
    for rows, workers, scenarios in cells:
        title = f"{rows:,} rows, --concurrency={workers}, {len(scenarios)} repeat(s)"
        head = f"{title:<44}{'median':>10}{'min':>10}{'max':>10}{'goal':>8}  verdict"
        print("\n" + head + "\n" + "-" * len(head))
        for label, stats in summarise_e2e(scenarios).items():
            cells_text = "".join(f"{formats[label].format(stats[k]):>10}" for k in ("median", "min", "max"))
            print(f"  {label:<42}{cells_text}{stats['goal'] or '':>8}  {stats['verdict'] or ''}")
