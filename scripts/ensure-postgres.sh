#!/usr/bin/env bash
# Makes sure a PostgreSQL server runs and has Mockplane's test role and
# database, then prints the DATABASE_URL to use. Starts the machine's
# cluster when it is stopped and creates one when there is none. When
# DATABASE_URL is already set and reachable, it is used as it is.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# Only the URL goes to stdout: everything the tools below print (apt,
# pg_ctlcluster, systemctl, psql) goes to stderr, so that a caller doing
# DATABASE_URL=$(ensure-postgres.sh) never captures their chatter.
exec 3>&1 1>&2

ROLE=mockplane
PASSWORD=mockplane
DATABASE=mockplane

case "${DATABASE_URL:-}" in
    postgres://* | postgresql://* | "") ;;
    *)
        log "ignoring DATABASE_URL: not a postgres:// URL"
        DATABASE_URL=
        ;;
esac
if [ -n "${DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 && pg_isready -q -d "$DATABASE_URL"; then
    printf '%s\n' "$DATABASE_URL" >&3
    exit 0
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
fi

cluster=$(pg_lsclusters --no-header 2>/dev/null | head -n 1 || true)
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating PostgreSQL $version cluster 'main'"
    as_root pg_createcluster "$version" main >/dev/null
    cluster=$(pg_lsclusters --no-header | head -n 1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then
    log "starting PostgreSQL $version/$name"
    # The server outlives this script: it must not inherit the caller's
    # pipes (fd 3 is the capture of `$(ensure-postgres.sh)`), or whoever
    # reads them waits for the server to exit. It logs to its own file.
    as_root pg_ctlcluster "$version" "$name" start </dev/null >/dev/null 2>&1 3>&- ||
        { echo "pg_ctlcluster could not start $version/$name; see /var/log/postgresql/postgresql-$version-$name.log" >&2; exit 1; }
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL did not become ready on port $port" >&2; exit 1; }

psql_admin() { as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    log "creating role $ROLE"
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
# A role row-level security does not hold for: the test that the control
# plane refuses to run as one connects with it.
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}_bypass'")" != "1" ]; then
    log "creating role ${ROLE}_bypass"
    psql_admin -c "CREATE ROLE ${ROLE}_bypass LOGIN BYPASSRLS PASSWORD '$PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != "1" ]; then
    log "creating database $DATABASE"
    psql_admin -c "CREATE DATABASE $DATABASE OWNER $ROLE"
fi
printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$ROLE" "$PASSWORD" "$port" "$DATABASE" >&3
