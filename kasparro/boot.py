"""Build the app for a long-running process, or stop it with one line saying why.

Every process starts here: gunicorn and the flask CLI through wsgi.py, the Celery worker, beat and Flower
through kasparro.worker. A malformed setting then reads the same everywhere (`kasparro: LEASE_SECONDS must be
an integer, got 'x'`), as the last line, with no traceback and a non-zero exit.
"""
from __future__ import annotations

import sys
import traceback

from flask import Flask

from kasparro import create_app
from kasparro.config import ConfigError
from kasparro.errors import KasparroError

# gunicorn's "worker failed to boot" code: the arbiter stops instead of forking new workers that fail alike.
BOOT_ERROR = 3


def create_app_or_exit() -> Flask:
    """Create the app from the environment; on failure, say why in one last line and exit with BOOT_ERROR."""
    try:
        return create_app()
    except Exception as exc:  # noqa: BLE001 - any failure here is fatal; we only choose how it reads
        if isinstance(exc, (ConfigError, KasparroError)):
            # A setting we can name: the message is the whole story, a traceback would only bury it.
            print(f"kasparro: {exc}", file=sys.stderr, flush=True)
        else:
            traceback.print_exc()
            print(f"kasparro: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        # SystemExit, not an exception: Celery's -A loader and flask's CLI would wrap an exception in their own
        # messages ("No such command 'etl'", "Unable to load celery application").
        raise SystemExit(BOOT_ERROR) from None
