"""`python -m kasparro.withenv COMMAND [ARG...]`: run COMMAND with `.env` merged under the environment.

`make run` starts its Procfile (kasparro.procfile, which reads no `.env` itself) through this; `honcho start`
would lay `.env` over the environment, so a key exported in the shell would lose to the one in the file.
Processes that read settings outside `kasparro.config` (gunicorn.conf.py, Flower's FLOWER_*) get
`.env` from here.
"""
from __future__ import annotations

import os
import sys

from kasparro.config import read_environment


def main(argv: list[str]) -> None:
    """Replace this process with `argv`, its environment being `.env` under the current one."""
    if not argv:
        sys.exit("usage: python -m kasparro.withenv COMMAND [ARG...]")
    os.execvpe(argv[0], argv, read_environment())


if __name__ == "__main__":
    main(sys.argv[1:])
