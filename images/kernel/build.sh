#!/bin/bash
# Builds the guest kernel from Debian's linux-source package with the
# patches beside this script and sandbox.config applied on top of `make
# allnoconfig`: everything built in, no modules, no ACPI, only the devices
# the VM has.
#
# usage: images/kernel/build.sh --source TARBALL --out DIR
#   writes DIR/vmlinux (uncompressed, PVH entry) and DIR/release (uname -r)
set -euo pipefail

SOURCE=""
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) SOURCE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "kernel/build.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ -f "$SOURCE" && -n "$OUT" ]] || { echo "kernel/build.sh: --source TARBALL and --out DIR are required" >&2; exit 2; }
FRAGMENT="$(cd "$(dirname "$0")" && pwd)/sandbox.config"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sandboxd-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xf "$SOURCE" -C "$work" --strip-components=1
cd "$work"
# Our changes to Debian's source, each explained at its top.
for patch in "$(dirname "$FRAGMENT")"/*.patch; do
    [[ -e "$patch" ]] || continue
    patch -s -p1 --forward < "$patch" || { echo "kernel/build.sh: $(basename "$patch") does not apply" >&2; exit 1; }
done
make -s allnoconfig KCONFIG_ALLCONFIG="$FRAGMENT"

# Kconfig drops a request whose dependencies are not met without a word:
# check that every line of the fragment made it into the configuration.
bad=0
while IFS= read -r line; do
    [[ "$line" =~ ^CONFIG_ ]] || continue
    key=${line%%=*}
    if [[ "${line#*=}" == n ]]; then
        grep -q "^$key=" .config && { echo "kernel/build.sh: $key is on, sandbox.config wants it off" >&2; bad=1; }
    else
        grep -qx "$line" .config || { echo "kernel/build.sh: $line did not survive Kconfig" >&2; bad=1; }
    fi
done < "$FRAGMENT"
[[ $bad -eq 0 ]] || exit 1

# Reproducible: the same source and fragment give the same bytes.
export KBUILD_BUILD_TIMESTAMP="@0" KBUILD_BUILD_USER=sandboxd KBUILD_BUILD_HOST=sandboxd
make -s -j"$(nproc)" vmlinux
mkdir -p "$OUT"
# The symbol table is for debuggers; the guest loads only the sections.
strip --strip-debug -o "$OUT/vmlinux" vmlinux
make -s kernelrelease > "$OUT/release"
