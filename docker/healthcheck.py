#!/usr/bin/env python3
"""Container health checks for the Kasparro ETL image (stdlib only).

The slim base image has no curl/wget, so the HTTP probes live here.

Usage:
  healthcheck.py http URL [--expect TEXT] [--timeout SECONDS]
      Healthy when URL answers 2xx (and the body contains TEXT, if given).
      Sends HTTP basic auth from FLOWER_BASIC_AUTH when the URL is on port 5555.
  healthcheck.py beat [--schedule PATH] [--max-age SECONDS]
      Healthy when a `celery ... beat` process is alive and its schedule file
      (PATH, or PATH.db/.dat as the dbm backend names it) was written within
      SECONDS. Beat re-syncs the file at least every ~8 minutes (3 min sync
      interval, 5 min max loop sleep), so the default max age is 900 s.

Exit status 0 = healthy, 1 = unhealthy (what Docker's HEALTHCHECK expects).
"""
from __future__ import annotations

import argparse
import base64
import glob
import os
import sys
import time
import urllib.error
import urllib.request

DEFAULT_SCHEDULE = "/tmp/celerybeat-schedule"


def check_http(url: str, expect: str | None, timeout: float) -> str | None:
    request = urllib.request.Request(url, headers={"User-Agent": "docker-healthcheck"})
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if basic_auth and ":5555" in url:
        first = basic_auth.split(",")[0].strip()
        token = base64.b64encode(first.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(65536).decode("utf-8", "replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"
    if not 200 <= status < 300:
        return f"{url} answered HTTP {status}"
    if expect is not None and expect not in body:
        return f"{url} body does not contain {expect!r}"
    return None


def _beat_process_alive() -> bool:
    for cmdline_path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline_path, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        words = [a.decode("utf-8", "replace") for a in argv if a]
        if "beat" in words and any("celery" in w for w in words):
            return True
    return False


def check_beat(schedule: str, max_age: float) -> str | None:
    if not _beat_process_alive():
        return "no celery beat process is running"
    files = [p for p in glob.glob(glob.escape(schedule) + "*") if os.path.isfile(p)]
    if not files:
        return f"schedule file {schedule} has not been written yet"
    age = time.time() - max(os.path.getmtime(p) for p in files)
    if age > max_age:
        return f"schedule file {schedule} is stale ({age:.0f}s old > {max_age:.0f}s)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    http = sub.add_parser("http", help="probe an HTTP endpoint")
    http.add_argument("url")
    http.add_argument("--expect", default=None, help="text the body must contain")
    http.add_argument("--timeout", type=float, default=4.0)
    beat = sub.add_parser("beat", help="check celery beat is alive and syncing")
    beat.add_argument("--schedule", default=os.environ.get("BEAT_SCHEDULE_FILE", DEFAULT_SCHEDULE))
    beat.add_argument("--max-age", type=float,
                      default=float(os.environ.get("BEAT_HEALTH_MAX_AGE", "900")))
    args = parser.parse_args(argv)

    if args.check == "http":
        problem = check_http(args.url, args.expect, args.timeout)
    else:
        problem = check_beat(args.schedule, args.max_age)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
