#!/bin/bash
# Runs the whole test suite: unit tests, then the suites that boot real
# microVMs through a private sandboxd (integration, security, abuse), the
# profile and unit checks, and the fuzzers briefly. Builds first if needed.
#
#   ./test.sh                 everything
#   ./test.sh --slow-host     the VM suites again with a CPU hog on every core:
#                             no test may depend on the host's speed
#   ./test.sh -L unit         any other arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")"

slow_host=0
args=()
for a in "$@"; do
  if [[ $a == --slow-host ]]; then slow_host=1; else args+=("$a"); fi
done

for tool in cmake qemu-system-x86_64 mkfs.erofs debootstrap; do
  command -v "$tool" >/dev/null || { echo "test.sh: '$tool' is missing; run ./setup.sh first" >&2; exit 1; }
done
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)"
images/build.sh --agent build/bin/sandbox-agent --out build/images
cd build

if [[ $slow_host == 0 ]]; then
  exec ctest --output-on-failure --timeout 1800 "${args[@]}"
fi

# One busy loop per core, at normal priority, for as long as the suites run;
# killed by pid whatever happens.
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
  sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "test.sh: ${#hogs[@]} CPU hogs running (pids ${hogs[*]}); VM suites under load"
ctest --output-on-failure --timeout 3600 -L 'integration|security' "${args[@]}"
