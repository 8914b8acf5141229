#!/bin/sh
# Usage: sh docker/require-login.sh VARIABLE COMMAND [ARG...]
# Exec COMMAND only when VARIABLE holds a login, user:password with neither part empty (Flower's
# FLOWER_BASIC_AUTH may list several, comma-separated: each is checked). Otherwise say which variable
# is missing and exit 1 without starting anything: a dashboard that can revoke and inspect tasks
# must not come up open to the internet because a platform left a secret unset.
set -eu

name="$1"
shift
eval "value=\${${name}:-}"
if [ -z "$value" ]; then
    echo "$name is not set: refusing to start $1 without a login (set it to user:password)" >&2
    exit 1
fi
set -f  # a "*" in a password is not a file pattern
old_ifs="$IFS"
IFS=,
for login in $value; do
    case "$login" in
        ?*:?*) ;;
        *) echo "$name must be user:password (comma-separated for several), with neither part empty" >&2
           exit 1 ;;
    esac
done
IFS="$old_ifs"
exec "$@"
