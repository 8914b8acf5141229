# syntax=docker/dockerfile:1
#
# Kasparro ETL: one image for every application process (API, Celery worker,
# beat, Flower, the offline fake upstream and the one-shot migration job).
# docker-compose.yml picks the process with `command:`; the default is the API.
#
# psycopg2-binary ships its own libpq, so no compiler or -dev packages are
# needed and a single stage stays small.

# Pinned by digest (python:3.11.16-slim when pinned): a rebuild gets the same base, not whatever the tag
# points at today. To update: docker pull python:3.11-slim, then docker inspect --format '{{index .RepoDigests 0}}'.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ARG APP_UID=10001
ARG APP_GID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/app \
    LOG_FORMAT=json \
    GUNICORN_BIND=0.0.0.0:8000

# Fixed, non-zero uid/gid so volume permissions are predictable across rebuilds.
RUN groupadd --system --gid "${APP_GID}" app \
 && useradd --system --uid "${APP_UID}" --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Then the project (see .dockerignore: no .env, .venv, var/ (make run's databases and passwords), .git, caches).
# Code stays root-owned, i.e. read-only for the app user; writable state goes
# to /tmp (beat schedule) and the database.
COPY . .

USER ${APP_UID}:${APP_GID}

EXPOSE 8000 5555 8900

# Liveness of the API (the default command). Other services override this in
# docker-compose.yml; python is used because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "http", "http://127.0.0.1:8000/health/live"]

ENTRYPOINT ["/bin/sh", "/app/docker/entrypoint.sh"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
