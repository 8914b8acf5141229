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
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tempfile.gettempdir(), f"kasparro-metrics-{os.getpid()}")


def on_starting(server):  # noqa: ARG001
    """Empty the metrics directory before any worker writes to it."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server, worker):  # noqa: ARG001
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
