"""Gunicorn settings for the API, from the environment."""
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
accesslog = "-"
# The app logs every request itself, with its request id; keep gunicorn's own
# access log short.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
