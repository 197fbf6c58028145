#!/bin/bash
# Checks the systemd units with systemd-analyze verify (no systemd as PID 1
# needed). ExecStart points at the built daemon so the check can find it.
set -euo pipefail
src="$1"
bin="$2"
command -v systemd-analyze >/dev/null || { echo "SKIPPED: systemd-analyze not installed"; exit 77; }
dir=$(mktemp -d /tmp/sandboxd-units.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cp "$src/systemd/sandboxd.slice" "$dir/"
sed "s|/usr/bin/sandboxd|$bin|" "$src/systemd/sandboxd.service" > "$dir/sandboxd.service"
units=(./sandboxd.service ./sandboxd.slice)
# The gateway's unit, when the gateway is built (it needs cpp-httplib).
gateway="$(dirname "$bin")/sandbox-gateway"
if [[ -x $gateway ]]; then
  sed "s|/usr/bin/sandbox-gateway|$gateway|" "$src/systemd/sandbox-gateway.service" > "$dir/sandbox-gateway.service"
  units+=(./sandbox-gateway.service)
fi
router="$(dirname "$bin")/sandbox-router"
if [[ -x $router ]]; then
  sed "s|/usr/bin/sandbox-router|$router|" "$src/systemd/sandbox-router.service" > "$dir/sandbox-router.service"
  units+=(./sandbox-router.service)
fi
cd "$dir"
out=$(systemd-analyze verify "${units[@]}" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings; treat any output about our units as failure.
if echo "$out" | grep -q "sandbox"; then echo "$out"; exit 1; fi
echo "units verified"
