#!/bin/sh
# Make a container engine available for the BYO container tests (idempotent, quiet).
# Nothing to do when a Docker daemon answers or podman is installed; otherwise, as root on
# Debian/Ubuntu, `apt-get install -y podman runc` (about 20 s; `apt-get update` first when apt
# knows no podman). Always exits 0: where it cannot install, it says why and the container
# tests skip.
set -u

say() { echo "ensure-podman: $*"; }

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    exit 0
fi
if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    say "podman is missing and this is not root: not installing (container tests will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "podman is missing and there is no apt-get: not installing (container tests will skip)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-cache show podman >/dev/null 2>&1; then
    apt-get update -q >"$log" 2>&1 || true
fi
say "installing podman and runc with apt-get"
if apt-get install -y -q podman runc >"$log" 2>&1 \
        && command -v podman >/dev/null 2>&1; then
    rm -f "$log"
    exit 0
fi
say "apt-get install podman runc failed (container tests will skip):"
tail -n 5 "$log" | sed 's/^/ensure-podman:   /'
rm -f "$log"
exit 0
