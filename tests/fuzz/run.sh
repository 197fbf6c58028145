#!/bin/bash
# Builds the libFuzzer targets in build-fuzz (clang, ASan and UBSan) and runs
# each for SECONDS on a copy of its seed corpus in fuzz/corpus/<target>/.
# Exits 1 on any crash, leak, timeout or out-of-memory, naming the input
# that reproduces it; 77 (skipped) when clang or its fuzzer runtime is
# missing. New corpus entries stay in a temp dir, never in the repository.
set -euo pipefail

seconds=${1:?usage: tests/fuzz/run.sh SECONDS}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-fuzz

# target and -max_len: frames carry whole messages, so their streams get
# room for several; a payload's structure shows in far fewer bytes, and a
# QMP line is at most 64 KiB.
targets=(
  "fuzz_msgpack_scan 65536"
  "fuzz_decode 65536"
  "fuzz_frame 1048576"
  "fuzz_json_parse 65536"
  "fuzz_net_frame 262144"
  "fuzz_dns_message 4096"
  "fuzz_tls_hello 20000"
  "fuzz_http_head 20000"
  "fuzz_socks 1024"
  "fuzz_packages 512"
  "fuzz_srv 4096"
  "fuzz_layer_description 600000"
)

skip() {
  echo "fuzz: skipped: $*" >&2
  exit 77
}

command -v clang >/dev/null && command -v clang++ >/dev/null ||
  skip "clang is not installed (Debian: apt-get install clang libclang-rt-14-dev)"
work=$(mktemp -d /tmp/sandboxd-fuzz.XXXXXX)
keep=0
cleanup() { [[ $keep == 1 ]] || rm -rf "$work"; }
trap cleanup EXIT
# clang's fuzzer and sanitizer runtimes are a package of their own.
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$work/probe.cc"
clang++ -fsanitize=fuzzer,address,undefined "$work/probe.cc" -o "$work/probe" 2>"$work/probe.log" ||
  skip "clang cannot link -fsanitize=fuzzer (Debian: apt-get install libclang-rt-14-dev): $(head -1 "$work/probe.log")"

started=$SECONDS
if [[ ! -f $build/CMakeCache.txt ]]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSANDBOXD_FUZZ=ON -DSANDBOXD_TESTS=OFF >"$work/configure.log" ||
    { cat "$work/configure.log" >&2; exit 1; }
fi
cmake --build "$build" -j"$(nproc)" --target fuzz_targets >"$work/build.log" 2>&1 ||
  { tail -50 "$work/build.log" >&2; exit 1; }
echo "fuzz: built in $((SECONDS - started)) s"

# Sanitizer reports end the run as crashes, with a stack trace.
export ASAN_OPTIONS=detect_leaks=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=0
for entry in "${targets[@]}"; do
  read -r target max_len <<<"$entry"
  mkdir -p "$work/$target/artifacts"
  cp -r "$root/fuzz/corpus/$target" "$work/$target/corpus"
  started=$SECONDS
  if "$build/bin/$target" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/$target/artifacts/" "$work/$target/corpus" \
    >"$work/$target/log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target/log")
    echo "fuzz: $target: ${runs:-?} inputs in $((SECONDS - started)) s, no finding"
  else
    failed=1
    keep=1
    echo "fuzz: $target: FAILED after $((SECONDS - started)) s" >&2
    # The finding and its stack, from its first line to its SUMMARY.
    report=$(sed -n '/ERROR\|invariant broken\|runtime error\|ALARM/,/^SUMMARY/p' "$work/$target/log" |
      head -80 || true)
    echo "${report:-$(tail -40 "$work/$target/log")}" >&2
    for reproducer in "$work/$target/artifacts"/*; do
      [[ -e $reproducer ]] && echo "fuzz: $target: reproducer: $reproducer (run: $build/bin/$target $reproducer)" >&2
    done
    echo "fuzz: $target: full log: $work/$target/log" >&2
  fi
done
exit "$failed"
