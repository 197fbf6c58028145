#!/bin/sh
# Runs the gateway suite (tests/gateway: sandbox-gateway, metrics and the
# audit trail against a private daemon) with PYTHON -m pytest. Exit 77
# (skipped) with the reason when a module the suite needs is missing.
set -u
py=${1:-/usr/bin/python3}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
for mod in pytest:python3-pytest prometheus_client:python3-prometheus-client; do
  if ! "$py" -c "import ${mod%%:*}" 2>/dev/null; then
    echo "SKIPPED: $py cannot import ${mod%%:*} (apt-get install ${mod#*:})"
    exit 77
  fi
done
PYTHONDONTWRITEBYTECODE=1 exec "$py" -m pytest -q -p no:cacheprovider tests/gateway "$@"
