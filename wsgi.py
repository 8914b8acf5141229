"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
from __future__ import annotations

import sys
import traceback

from kasparro import create_app
from kasparro.config import ConfigError
from kasparro.errors import KasparroError

# gunicorn's "worker failed to boot" code: the arbiter stops instead of forking new workers that fail alike.
BOOT_ERROR = 3

try:
    app = create_app()
except Exception as exc:  # noqa: BLE001 - any failure here is fatal; we only choose how it reads
    # flask's CLI would bury this under "No such command 'etl'"; say what is wrong, last, in one line.
    if isinstance(exc, (ConfigError, KasparroError)):
        print(f"kasparro: {exc}", file=sys.stderr)
    else:
        traceback.print_exc()
        print(f"kasparro: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
    raise SystemExit(BOOT_ERROR) from None
