"""`python -m kasparro.banner`: the first screen of `make run` / `make serve`, before the processes' own logs.

It says where each part listens (GUNICORN_BIND, FLOWER_PORT: shell first, then `.env`, as the processes
read them) as plain URLs, and where the API key comes from and how to send it, never the key itself:
terminals get logged and shared.
"""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from kasparro.config import PROJECT_ROOT

# What gunicorn.conf.py and Flower use when nothing is set.
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_FLOWER_PORT = "5555"
# Binds that mean "every interface": a browser on this machine reaches them on loopback.
ANY_HOST = ("", "0.0.0.0", "[::]", "::")


def env_file() -> Path:
    """Return the `.env` the processes read (ENV_FILE, else the checkout's)."""
    return Path(os.environ.get("ENV_FILE", str(PROJECT_ROOT / ".env")))


def api_url(bind: str) -> str:
    """Return the URL a browser on this machine opens for gunicorn's `bind`."""
    if bind.startswith("unix:"):
        return bind
    host, _, port = bind.rpartition(":")
    return f"http://{'127.0.0.1' if host in ANY_HOST else host}:{port}"


def key_line(shell: Mapping[str, str], file: Mapping[str, str | None], path: Path) -> str:
    """Say where API_KEY comes from, and how to send it, without printing it."""
    if shell.get("API_KEY"):
        # Set for this command only (`API_KEY=... make run`), it is in no file a second terminal could read.
        where = "it wins over the one in .env" if file.get("API_KEY") else "not in .env"
        return f"API key: the API_KEY set in the environment of this command ({where}); send it as header X-API-Key"
    if file.get("API_KEY"):
        where = shlex.quote(str(path))
        return f"API key: in {path}; send it as header X-API-Key: \"$(grep '^API_KEY=' {where} | cut -d= -f2-)\""
    return "API key: none set, so POST /run-etl and the other writes are refused (`make env` generates one)"


def lines(shell: Mapping[str, str], file: Mapping[str, str | None], path: Path) -> list[str]:
    """Return the banner: one line of URLs, one about the API key."""
    def setting(name: str, default: str) -> str:
        return shell.get(name) or file.get(name) or default

    api = api_url(setting("GUNICORN_BIND", DEFAULT_BIND))
    flower = f"http://127.0.0.1:{setting('FLOWER_PORT', DEFAULT_FLOWER_PORT)}"
    return [f"Status page {api}/  API {api}  docs {api}/docs  Flower {flower}", key_line(shell, file, path)]


def main() -> None:
    path = env_file()
    file = dotenv_values(path) if path.is_file() else {}
    print("\n".join(lines(os.environ, file, path)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
