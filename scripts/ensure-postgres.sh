#!/bin/sh
# Make PostgreSQL's server binaries (initdb, postgres) and HAProxy available for the tests of
# several servers sharing one state store (tests/fixtures/postgres.py starts its own server in
# a temporary directory; nothing here starts a service). Idempotent and quiet: nothing to do
# when both are installed; otherwise, as root on Debian/Ubuntu, `apt-get install -y postgresql
# haproxy` (`apt-get update` first when apt knows neither). Always exits 0: where it cannot
# install, it says why, and those tests FAIL (they do not skip).
set -u

say() { echo "ensure-postgres: $*"; }

have_postgres() {
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1
}

if have_postgres && command -v haproxy >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "PostgreSQL or HAProxy is missing and cannot be installed here (not root, or no apt-get):"
    say "install postgresql and haproxy; the shared-state tests will fail until then"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-cache show postgresql haproxy >/dev/null 2>&1; then
    apt-get update -q >"$log" 2>&1 || true
fi
say "installing postgresql and haproxy with apt-get"
if apt-get install -y -q postgresql haproxy >"$log" 2>&1 && have_postgres; then
    rm -f "$log"
    exit 0
fi
say "apt-get install postgresql haproxy failed (the shared-state tests will fail):"
tail -n 5 "$log" | sed 's/^/ensure-postgres:   /'
rm -f "$log"
exit 0
