#!/bin/bash
# Runs the whole test suite: unit tests, then integration tests that boot
# real microVMs through a private sandboxd. Builds first if needed.
set -euo pipefail
cd "$(dirname "$0")"

for tool in cmake qemu-system-x86_64 mkfs.erofs debootstrap; do
  command -v "$tool" >/dev/null || { echo "test.sh: '$tool' is missing; run ./setup.sh first" >&2; exit 1; }
done
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)"
images/build.sh --agent build/bin/sandbox-agent --out build/images
cd build
ctest --output-on-failure --timeout 1500 "$@"
