#!/bin/sh
# The compose migrate job: as the superuser (ADMIN_DATABASE_URL), hand the database to the application
# role of DATABASE_URL (docker/app_role.py); then, as that role, run the migrations. The superuser's
# password reaches this one-shot container only.
set -eu
python /app/docker/app_role.py
unset ADMIN_DATABASE_URL
exec flask --app wsgi etl init-db
