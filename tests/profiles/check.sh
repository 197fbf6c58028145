#!/bin/bash
# Compiles the AppArmor profiles (apparmor_parser, no kernel load: this
# kernel may not have AppArmor) and the SELinux module (checkmodule and
# semodule_package). Skipped when the tools are missing.
set -euo pipefail
src="$1"
for tool in apparmor_parser checkmodule semodule_package; do
  command -v "$tool" >/dev/null || { echo "SKIPPED: $tool not installed"; exit 77; }
done
dir=$(mktemp -d /tmp/sandboxd-profiles.XXXXXX)
trap 'rm -rf "$dir"' EXIT
for profile in "$src"/apparmor/*; do
  # -Q: parse and compile only; -K: no cache; -T: do not read the cache.
  out=$(apparmor_parser -Q -K -T -o "$dir/$(basename "$profile").bin" "$profile" 2>&1) || { echo "$out"; exit 1; }
  [ -s "$dir/$(basename "$profile").bin" ] || { echo "no output for $profile"; exit 1; }
  echo "apparmor: $(basename "$profile") compiled"
done
checkmodule -M -m -o "$dir/sandboxd.mod" "$src/selinux/sandboxd.te"
semodule_package -o "$dir/sandboxd.pp" -m "$dir/sandboxd.mod" -f "$src/selinux/sandboxd.fc"
[ -s "$dir/sandboxd.pp" ] || { echo "no policy package"; exit 1; }
echo "selinux: sandboxd.pp packaged"
