#!/bin/sh
# Wait until a compose service's container reports "healthy".
# Usage: COMPOSE="docker compose" sh docker/wait-healthy.sh SERVICE [TIMEOUT_SECONDS]
# Works with `docker compose` (v2) and `docker-compose` (v1): it only uses
# `ps -q` and `docker inspect`.
set -eu

service="${1:?usage: wait-healthy.sh SERVICE [TIMEOUT_SECONDS]}"
timeout="${2:-180}"
compose="${COMPOSE:-docker compose}"

waited=0
printf 'waiting for %s to become healthy' "$service"
while :; do
    cid="$($compose ps -q "$service" 2>/dev/null | head -n1 || true)"
    status=""
    if [ -n "$cid" ]; then
        status="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$cid" 2>/dev/null || true)"
    fi
    case "$status" in
        healthy)
            echo " ok"
            exit 0
            ;;
        unhealthy|exited|dead)
            echo " $status"
            $compose logs --tail=50 "$service" >&2 || true
            exit 1
            ;;
    esac
    if [ "$waited" -ge "$timeout" ]; then
        echo " timed out after ${timeout}s (status: ${status:-no container})"
        $compose ps >&2 || true
        $compose logs --tail=50 "$service" >&2 || true
        exit 1
    fi
    printf '.'
    sleep 2
    waited=$((waited + 2))
done
