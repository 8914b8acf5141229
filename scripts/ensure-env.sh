#!/bin/sh
# Create ./.env if it does not exist yet (from .env.example when present) and
# fill in the secrets that have no default anywhere: API_KEY, FLOWER_BASIC_AUTH,
# POSTGRES_PASSWORD and APP_DB_PASSWORD (compose's database superuser and
# application role), GRAFANA_ADMIN_PASSWORD and FAKE_UPSTREAM_ADMIN_TOKEN. Existing non-empty values are
# never changed, and a secret already set in the environment is left alone:
# the environment wins over .env, so a generated value would never be used.
# Secrets are written to .env (mode 600) and never printed: terminals are
# logged, recorded and shared. It prints where they are and how to read one.
# Usage: sh scripts/ensure-env.sh [ENV_FILE]
set -eu

env_file="${1:-.env}"
example="$(dirname "$0")/../.env.example"
generated=""

random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

if [ ! -f "$env_file" ]; then
    if [ -f "$example" ]; then
        cp "$example" "$env_file"
    else
        : > "$env_file"
    fi
    chmod 600 "$env_file"
    echo "created $env_file"
fi

# set_if_empty NAME VALUE: replace an empty `NAME=` line, or append one.
set_if_empty() {
    name="$1"
    value="$2"
    eval "from_environment=\${${name}:-}"
    if [ -n "${from_environment}" ]; then
        return 0
    fi
    if grep -Eq "^${name}=.+" "$env_file"; then
        return 0
    fi
    if grep -Eq "^${name}=" "$env_file"; then
        tmp="${env_file}.tmp.$$"
        sed "s|^${name}=.*|${name}=${value}|" "$env_file" > "$tmp" && cat "$tmp" > "$env_file"
        rm -f "$tmp"
    else
        # make sure the file ends with a newline before appending
        if [ -s "$env_file" ] && [ "$(tail -c1 "$env_file" | od -An -c | tr -d ' ')" != '\n' ]; then
            echo >> "$env_file"
        fi
        printf '%s=%s\n' "$name" "$value" >> "$env_file"
    fi
    generated="${generated} ${name}"
}

set_if_empty API_KEY "$(random_hex 24)"
set_if_empty FLOWER_BASIC_AUTH "admin:$(random_hex 12)"
# Hex only: both go into a DATABASE_URL unescaped.
set_if_empty POSTGRES_PASSWORD "$(random_hex 16)"
set_if_empty APP_DB_PASSWORD "$(random_hex 16)"
set_if_empty GRAFANA_ADMIN_PASSWORD "$(random_hex 16)"
set_if_empty FAKE_UPSTREAM_ADMIN_TOKEN "$(random_hex 16)"

# Not a secret, so not generated: the compose project's name, which compose reads from .env. A .env made
# before .env.example named it gets it here, so a hand-typed `docker compose down -v` finds `make up`'s volumes.
if ! grep -Eq '^COMPOSE_PROJECT_NAME=' "$env_file"; then
    if [ -s "$env_file" ] && [ "$(tail -c1 "$env_file" | od -An -c | tr -d ' ')" != '\n' ]; then
        echo >> "$env_file"
    fi
    echo "COMPOSE_PROJECT_NAME=kasparro" >> "$env_file"
fi

if [ -n "$generated" ]; then
    echo "generated${generated} in $env_file (readable by you only; not shown here)"
    case "$generated" in
        *" API_KEY"*) echo "your API key (header X-API-Key): grep '^API_KEY=' $env_file" ;;
    esac
fi
