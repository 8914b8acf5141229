#!/bin/sh
# Entrypoint for every Kasparro ETL container (api, worker, beat, flower,
# upstream, migrate). It only adjusts the environment, then execs the command
# so the process runs as PID 1 and receives SIGTERM from `docker stop`.
set -eu

# Compose passes every setting docker-compose.yml lists, as an empty string
# when neither the shell nor .env sets it; drop every empty variable so each
# program falls back to its own default (gunicorn.conf.py would int("")).
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=$/\1/p'); do
    unset "${name}"
done

exec "$@"
