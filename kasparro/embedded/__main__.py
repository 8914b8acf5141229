"""`python -m kasparro.embedded run|test -- COMMAND...`: see kasparro.embedded.local."""
from __future__ import annotations

import signal
import sys

from kasparro.embedded.local import main

status = main(sys.argv[1:])
# Ctrl-C reached the command and the make above us alike: the command stopped and the servers are stopped, as
# asked. make dies of the SIGINT itself and says nothing more if we exit 0, where 254 would add a
# "*** [run] Error 254" line after the last log line.
sys.exit(0 if status == -signal.SIGINT else status)
