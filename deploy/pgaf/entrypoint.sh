#!/bin/sh
# pgaf-entrypoint monitor | node NAME: create the pg_auto_failover monitor or a
# node on the first start (its data directory empty), then run it. The same
# settings as deploy/pgpair.py (MONITOR_SETTINGS, NODE_SETTINGS): keep them alike.
#   PGPORT                    this server's port (5432)
#   NODE_HOST                 the name others reach it by (the container's host name)
#   MONITOR_HOST, MONITOR_PORT  the monitor (node)
#   PEER_HOST, PEER_PORT      the other node: asked for a checkpoint while this one copies it
#   ARCHIVE_DIR               where each node archives its WAL (optional)
set -eu
role=${1:?monitor or node}
host=${NODE_HOST:-$(hostname)}
port=${PGPORT:-5432}

case "$role" in
monitor)
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport "$port" --hostname "$host" --auth trust --no-ssl
        cat >>"$PGDATA/postgresql.conf" <<'CONF'
# posgw: fail over in seconds, not a minute (docs/reliability.md)
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 200
pgautofailover.node_considered_unhealthy_timeout = 2000
pgautofailover.primary_demote_timeout = 3000
pgautofailover.startup_grace_period = 2000
CONF
    fi
    exec pg_autoctl run --pgdata "$PGDATA"
    ;;
node)
    name=${2:?node name}
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        # a standby's base backup waits for the primary's next checkpoint (minutes):
        # ask for one until the copy is there
        if [ -n "${PEER_HOST:-}" ]; then
            (while [ ! -f "$PGDATA/PG_VERSION" ]; do
                psql -h "$PEER_HOST" -p "${PEER_PORT:-5432}" -d posgw -Atqc CHECKPOINT >/dev/null 2>&1 || true; sleep 1
            done) &
        fi
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport "$port" --hostname "$host" --name "$name" \
            --dbname posgw \
            --monitor "postgres://autoctl_node@${MONITOR_HOST:?}:${MONITOR_PORT:-5432}/pg_auto_failover?sslmode=disable" \
            --auth trust --pg-hba-lan --no-ssl
    fi
    # our settings, once: a standby has them already, in the copy of its primary
    if [ -f "$PGDATA/PG_VERSION" ] && ! grep -q '^# posgw' "$PGDATA/postgresql.conf"; then
        {
            echo "# posgw (deploy/pgaf/entrypoint.sh)"
            echo "wal_retrieve_retry_interval = '200ms'"
            if [ -n "${ARCHIVE_DIR:-}" ]; then
                echo "archive_mode = on"
                echo "archive_command = 'test ! -f $ARCHIVE_DIR/%f && cp %p $ARCHIVE_DIR/%f.part && mv $ARCHIVE_DIR/%f.part $ARCHIVE_DIR/%f'"
            fi
        } >>"$PGDATA/postgresql.conf"
    fi
    exec pg_autoctl run --pgdata "$PGDATA"
    ;;
*)
    echo "usage: pgaf-entrypoint monitor | node NAME" >&2
    exit 2
    ;;
esac
