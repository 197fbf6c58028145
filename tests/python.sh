#!/bin/sh
# Runs the Python client's suite: PYTHON -m pytest -q python/tests, from the
# source tree, against the daemon named by $SANDBOXD_BIN and the images in
# $SANDBOXD_TEST_IMAGES (ctest sets both). Exit 77 (skipped) with the reason
# when the interpreter lacks a module the client or the suite needs.
set -u
py=${1:-/usr/bin/python3}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
for mod in msgpack:python3-msgpack zstandard:python3-zstandard pytest:python3-pytest; do
  if ! "$py" -c "import ${mod%%:*}" 2>/dev/null; then
    echo "SKIPPED: $py cannot import ${mod%%:*} (apt-get install ${mod#*:})"
    exit 77
  fi
done
PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
  exec "$py" -m pytest -q -p no:cacheprovider python/tests "$@"
