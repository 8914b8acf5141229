"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
from kasparro import create_app

app = create_app()
