"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
from __future__ import annotations

from kasparro.boot import create_app_or_exit

# A malformed setting stops gunicorn and every flask command with one line (see kasparro.boot).
app = create_app_or_exit()
