#!/usr/bin/env bash
# The Debian packages that `make test` needs beyond Python: HAProxy and Prometheus
# for the scale-out test (tests/e2e/test_cluster.py) and the alert rules (Debian's prometheus
# ships promtool: tests/deploy/test_alerts.py); PostgreSQL 15 and
# pg_auto_failover for the failover and restore tests (tests/e2e/test_failover.py,
# tests/e2e/test_restore.py, deploy/pgpair.py); Chromium for the browser tests. Installs whichever is
# missing, with apt-get as root (or passwordless sudo). Where that cannot be
# done it says so and exits 0: the tests that need a missing tool then skip,
# except under CI=true, where they fail (tests/conftest.py, needs_tools).
set -uo pipefail

# package=the command that tells it is installed. Chromium is for the back office's browser tests
# (tests/backoffice/test_browser.py: Playwright drives Debian's Chromium, never a browser of its own).
PACKAGES=(haproxy=haproxy prometheus=prometheus
          postgresql-15=/usr/lib/postgresql/15/bin/pg_ctl postgresql-15-auto-failover=pg_autoctl
          chromium=chromium)

sbin_path="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
missing=()
commands=()
for entry in "${PACKAGES[@]}"; do
    package=${entry%%=*} command=${entry#*=}
    if ! PATH="$sbin_path" command -v "$command" >/dev/null; then
        missing+=("$package")
        commands+=("$command")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "test-tools: not root and no sudo: ${missing[*]} not installed"
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "test-tools: no apt-get: ${missing[*]} not installed"
    exit 0
fi
echo "test-tools: installing ${missing[*]} (Debian packages)"
log=$(mktemp)
if ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
    && ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    for command in "${commands[@]}"; do
        echo "test-tools: $(PATH="$sbin_path" "$command" --version 2>&1 | head -n 1)"
    done
else
    echo "test-tools: installing ${missing[*]} failed:"
    tail -n 5 "$log" | sed 's/^/test-tools:   /'
fi
rm -f "$log"
exit 0
