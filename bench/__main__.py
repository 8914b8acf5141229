"""`python -m bench`: load a large CSV end to end and compare with a plain COPY of the same file.

Steps (see bench/README.md): for each cell of rows x worker processes, and
each repeat, generate the file, build a throwaway database with the
migrations, time a plain COPY (the baseline), start a real Celery worker,
time a full run, an unchanged re-run and a run after appending 1%, check the
row counts and print the scenario's table. Then print each cell's median,
min and max and write them, with every scenario, to a JSON result file.
Exit status 1 if a run did not succeed or a count is wrong, so the bench
doubles as a correctness check.

With --e2e the same cells run through the whole stack of `make run` instead (bench.e2e): the Procfile's
processes, each run triggered by POST /run-etl and followed by polling GET /runs/<id>, against psql's \copy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["ENV_FILE"] = ""  # the bench never reads a developer's .env

from bench import data
from bench.report import print_scenario, print_summary, write_json
from bench.scenario import Scenario, Settings, run_scenario
from kasparro.config import ConfigError, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent
Cells = list[tuple[int, int, list[Any]]]  # Scenario, or bench.e2e.E2EScenario


def _counts(text: str) -> list[int]:
    """Parse `1000000,5000000` (underscores allowed) into positive whole numbers."""
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, not {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=_counts, default=[200_000], help="rows in the bench file, comma-separated "
                        "for several cells (default 200000; the issue's matrix: 1000000,5000000)")
    parser.add_argument("--workers", "--concurrency", dest="workers", type=_counts, default=[2],
                        help="worker processes (celery -c), comma-separated for several cells (default 2)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="worker processes started apart (Celery nodes of their own, as on separate machines),"
                             " each with --workers pool processes; worker-only mode (default 1)")
    parser.add_argument("--grow", type=int, default=0, metavar="STEPS",
                        help="with --e2e: after loading --rows, append as many rows STEPS times, timing each load and"
                             " the API's reads as the table grows (bench.grow)")
    parser.add_argument("--monthly", action="store_true",
                        help="with --grow: run the partition pass after each step (timed apart), as beat does daily,"
                             " so steps load into monthly partitions instead of DEFAULT")
    parser.add_argument("--repeat", type=int, default=1, help="scenarios per cell; median, min and max are shown")
    parser.add_argument("--batch-size", type=int, default=int(os.environ.get("BATCH_SIZE") or 0) or None,
                        help="worker BATCH_SIZE (default: unset, the product's own: 20000 lines per raw chunk)")
    parser.add_argument("--append-pct", type=float, default=1.0, help="rows appended for the incremental run, %%")
    parser.add_argument("--copies", type=int, default=3, help="baseline COPY repetitions; the median counts")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one run")
    parser.add_argument("--results", type=Path, default=ROOT / "var" / "bench",
                        help="directory for the JSON result file (default var/bench)")
    parser.add_argument("--profile", action="store_true",
                        help="after the first scenario, run the stages in-process under cProfile")
    parser.add_argument("--e2e", action="store_true",
                        help="end to end: start the stack as `make run` does (API under gunicorn, worker, beat, "
                             "Flower, fake upstream) and trigger each run over HTTP, against psql's \\copy")
    parser.add_argument("--skip-paging", action="store_true",
                        help="do not run the API paging bench (python -m bench.paging) afterwards")
    parser.add_argument("--db-server", default=os.environ.get("BENCH_DATABASE_SERVER",
                                                              "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    parser.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--repeat and --batch-size must be positive")
    if args.e2e and args.profile:
        parser.error("--profile runs the stages in-process: it has no end-to-end form")
    if args.monthly and not args.grow:
        parser.error("--monthly goes with --grow")
    if args.grow and (not args.e2e or args.grow < 1 or len(args.rows) != 1 or len(args.workers) != 1):
        parser.error("--grow takes a positive number of steps, with --e2e and one --rows and --workers value")
    if args.nodes < 1 or (args.e2e and args.nodes != 1):
        parser.error("--nodes must be positive, and 1 with --e2e (make run starts one worker)")
    try:
        # The baseline COPY opens its own engine, so it needs the driver named as the app does.
        args.db_server = normalise_database_url(args.db_server)
    except ConfigError as exc:
        parser.error(f"--db-server: {exc}")
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _settings(args: argparse.Namespace, rows: int, workers: int) -> Settings:
    return Settings(rows, workers, args.batch_size, args.append_pct, args.copies, args.timeout, args.db_server,
                    args.broker, nodes=args.nodes)


def _write_file(workdir: Path, rows: int) -> Path:
    path = workdir / f"bench-{rows}.csv"
    started = time.perf_counter()
    data.write(path, rows)
    print(f"wrote {rows:,} rows ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f}s"
          f" — {data.describe()}", flush=True)
    return path


def _mode(args: argparse.Namespace) -> tuple[Callable[..., Any], Callable[[Any], None], str]:
    """The scenario runner, its printer and its tag prefix: worker only, or end to end."""
    if not args.e2e:
        return run_scenario, print_scenario, ""
    from bench.e2e import run_e2e_scenario
    from bench.e2e_report import print_e2e_scenario

    return run_e2e_scenario, print_e2e_scenario, "e2e"


def run_cells(args: argparse.Namespace, workdir: Path) -> Cells:
    """Run every cell's repeats, printing each scenario's table as it finishes."""
    cells: Cells = []
    runner, printer, prefix = _mode(args)
    profile = args.profile
    for rows in args.rows:
        template = _write_file(workdir, rows)
        for workers in args.workers:
            scenarios = []
            for repeat in range(1, args.repeat + 1):
                print(f"\n== {rows:,} rows, -c {workers}, repeat {repeat} of {args.repeat}", flush=True)
                settings = replace(_settings(args, rows, workers), profile=profile)
                tag = f"{prefix}{os.getpid()}_{len(cells)}_{repeat}"
                scenarios.append(runner(settings, template, workdir, tag, printer))
                profile = False  # once is enough, and it is slow
            cells.append((rows, workers, scenarios))
        template.unlink()
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="kasparro-bench-"))
    if args.grow:
        return _grow(args, workdir)
    try:
        cells = run_cells(args, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    problems = [p for _, _, scenarios in cells for s in scenarios for p in s.problems]
    settings = {k: v for k, v in vars(args).items() if k not in ("db_server", "broker", "results")}
    if args.e2e:
        from bench.e2e_report import print_e2e_summary, summarise_e2e

        print_e2e_summary(cells)
        path = write_json(args.results, settings, cells, not problems, summarise_e2e, "e2e-result")
    else:
        if len(cells) > 1 or args.repeat > 1:
            print_summary(cells)
        path = write_json(args.results, settings, cells, not problems)
    print(f"\nresults written to {path}")
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    else:
        print("\nOK: every run succeeded and every count matched")
    # The paging bench measures the API's reads, which the end-to-end mode does not touch.
    paging_status = 0 if args.skip_paging or args.e2e else _paging(args.db_server)
    return 1 if problems else paging_status


def _grow(args: argparse.Namespace, workdir: Path) -> int:
    from bench.grow import print_growth, run_growth

    try:
        template = _write_file(workdir, args.rows[0])
        growth = run_growth(_settings(args, args.rows[0], args.workers[0]), args.grow, template, workdir,
                            f"grow{os.getpid()}", monthly=args.monthly)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_growth(growth)
    settings = {k: v for k, v in vars(args).items() if k not in ("db_server", "broker", "results")}
    path = write_json(args.results, settings, [(args.rows[0], args.workers[0], [growth])], not growth.problems,
                      lambda runs: {}, "grow-result")
    print(f"\nresults written to {path}")
    if growth.problems:
        print("\nFAILED:\n  " + "\n  ".join(growth.problems), file=sys.stderr)
        return 1
    print("\nOK: every step loaded every appended row, and every read answered 200")
    return 0


def _paging(db_server: str) -> int:
    from bench import paging

    print("\nAPI paging bench (python -m bench.paging; skip with --skip-paging)", flush=True)
    return paging.main(["--db-server", db_server])


if __name__ == "__main__":
    sys.exit(main())
