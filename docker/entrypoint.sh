#!/bin/sh
# Entrypoint for every Kasparro ETL container (api, worker, beat, flower,
# upstream, migrate). It only adjusts the environment, then execs the command
# so the process runs as PID 1 and receives SIGTERM from `docker stop`.
set -eu

# Compose passes optional settings as empty strings when .env leaves them out;
# drop those so the application falls back to its own defaults.
for name in COINPAPRIKA_BASE_URL COINGECKO_BASE_URL COINGECKO_API_KEY \
            COINPAPRIKA_API_KEY ETL_INTERVAL_SECONDS FLOWER_BASIC_AUTH; do
    eval "value=\${${name}:-}"
    if [ -z "${value}" ]; then
        unset "${name}"
    fi
done

exec "$@"
