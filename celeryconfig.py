"""Celery delivery settings shared by every process (URLs and schedule come from the app's config).

Check it with `python -m celeryconfig`.
"""
# Exactly-once effects over at-least-once delivery: a task is acknowledged only
# after it finished, and redelivered if its worker died; every task is idempotent.
task_acks_late = True
task_reject_on_worker_lost = True
# One message at a time per process, so a dead worker strands at most one.
worker_prefetch_multiplier = 1
# Only references (run and source-run ids) travel through the broker, as JSON.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
timezone = "UTC"
enable_utc = True
# Events feed Flower's dashboard.
worker_send_task_events = True
task_send_sent_event = True
task_track_started = True
worker_hijack_root_logger = False
broker_connection_retry_on_startup = True
# The broker's visibility timeout (BROKER_VISIBILITY_TIMEOUT_SECONDS) and the task time limits are set
# from the app's config in kasparro/celery_app.py, which checks that they agree with each other.
result_expires = 3600

if __name__ == "__main__":
    for name, value in sorted(dict(globals()).items()):
        if not name.startswith("_"):
            print(f"{name} = {value!r}")
