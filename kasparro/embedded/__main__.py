"""`python -m kasparro.embedded run|test -- COMMAND...`: see kasparro.embedded.local."""
from __future__ import annotations

import sys

from kasparro.embedded.local import main

sys.exit(main(sys.argv[1:]))
