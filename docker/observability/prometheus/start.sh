#!/bin/sh
# Render prometheus.yml with Flower's login from FLOWER_BASIC_AUTH (user:password), then run Prometheus.
# The directories and the binary can be moved so tests/test_alerts.py can run this script outside a container.
set -eu
conf=${PROMETHEUS_CONFIG_DIR:-/etc/prometheus}
out=${PROMETHEUS_RENDER_DIR:-/tmp}
case "$FLOWER_BASIC_AUTH" in
    *:*) ;;
    *) echo "FLOWER_BASIC_AUTH must be user:password" >&2; exit 1 ;;
esac
user=${FLOWER_BASIC_AUTH%%:*}
case "$user" in
    # It goes into a double-quoted YAML string through sed: refuse what would need escaping in either.
    *[\"\\\|\&]*) echo "the FLOWER_BASIC_AUTH user must not contain \" \\ | or &" >&2; exit 1 ;;
esac
umask 077
printf '%s' "${FLOWER_BASIC_AUTH#*:}" > "$out/flower_password"
sed -e "s|__FLOWER_USER__|$user|" -e "s|__CONFIG_DIR__|$conf|" -e "s|__RENDER_DIR__|$out|" \
    "$conf/prometheus.yml" > "$out/prometheus.yml"
exec "${PROMETHEUS_BIN:-/bin/prometheus}" --config.file="$out/prometheus.yml" --storage.tsdb.path=/prometheus \
    --storage.tsdb.retention.time=15d
