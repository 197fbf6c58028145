#!/bin/sh
# Runs the router suite (tests/router: sandbox-router in front of three
# private sandboxd nodes found through DNS SRV, and the Nomad and Kubernetes
# files checked) with PYTHON -m pytest. Exit 77 (skipped) with the reason
# when a module the suite needs is missing.
set -u
py=${1:-/usr/bin/python3}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
for mod in pytest:python3-pytest prometheus_client:python3-prometheus-client yaml:python3-yaml; do
  if ! "$py" -c "import ${mod%%:*}" 2>/dev/null; then
    echo "SKIPPED: $py cannot import ${mod%%:*} (apt-get install ${mod#*:})"
    exit 77
  fi
done
PYTHONDONTWRITEBYTECODE=1 exec "$py" -m pytest -q -p no:cacheprovider tests/router "$@"
