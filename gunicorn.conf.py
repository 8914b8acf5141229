"""Gunicorn settings for the API, from the environment."""
import os
import shutil
import tempfile

from kasparro.config import read_environment
from kasparro.logformat import gunicorn_logconfig

# Loopback unless told otherwise: `make run` serves this machine only. Containers set 0.0.0.0:8000 (Dockerfile,
# docker-compose.yml), where the port mapping decides; Render passes --bind itself.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
# Error and access lines go through the app's handler, so with LOG_FORMAT=json they are JSON like the app's.
logconfig_dict = gunicorn_logconfig(read_environment())

# Request metrics are kept per worker process and merged at scrape time, so
# /metrics is right whichever worker answers. The directory must start empty.
# Unless one is given, each server makes its own, named for its pid, and removes it when it stops: a
# directory left by a server that could not (killed) is removed by the next start, once its pid is gone.
_OWN_PREFIX = "kasparro-metrics-"
_own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tempfile.gettempdir(), f"{_OWN_PREFIX}{os.getpid()}")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _remove_stale_dirs():
    """Remove the metrics directories of our servers whose process is gone (this user's only)."""
    parent = tempfile.gettempdir()
    for name in os.listdir(parent):
        pid = name[len(_OWN_PREFIX):]
        path = os.path.join(parent, name)
        if (name.startswith(_OWN_PREFIX) and pid.isdigit() and not _pid_alive(int(pid))
                and os.path.isdir(path) and not os.path.islink(path) and os.stat(path).st_uid == os.getuid()):
            shutil.rmtree(path, ignore_errors=True)


def on_starting(server):  # noqa: ARG001
    """Empty the metrics directory before any worker writes to it."""
    if _own_dir:
        _remove_stale_dirs()
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def on_exit(server):  # noqa: ARG001
    """Remove the metrics directory this server made for itself (one it was given stays, emptied at start)."""
    if _own_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):  # noqa: ARG001
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
