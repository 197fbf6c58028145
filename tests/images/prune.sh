#!/bin/bash
# images/build.sh keeps its cache to what image sets use: planted entries
# that no key names are removed unless an image directory still has them
# hard-linked, and what a killed build left goes too; and its initramfs,
# built again, is the same bytes. Runs build.sh on an already built image
# set (every step a cache hit but the initramfs, seconds).
set -euo pipefail
src="$1"
agent="$2"
out="$3"
[[ $EUID -eq 0 ]] || { echo "SKIPPED: images/build.sh needs root"; exit 77; }
[[ -f "$out/manifest" ]] || { echo "SKIPPED: no images in $out yet (images/build.sh)"; exit 77; }
cache="${SANDBOXD_IMAGE_CACHE:-/var/cache/sandboxd/images}"
keep=$(mktemp -d /tmp/sandboxd-prune.XXXXXX)
# Names no key of build.sh can produce (keys are hex), removed whatever happens.
planted=(initramfs-prunetest-old.cpio initramfs-prunetest-kept.cpio rootfs-prunetest-old.erofs
  rootfs-prunetest-old.packages rootfs-sources-prunetest builder-prunetest-old.packages
  kernel-prunetest-old .rootfs.prunetest)
cleanup() {
  for p in "${planted[@]}"; do rm -rf "${cache:?}/$p"; done
  rm -rf "$keep"
}
trap cleanup EXIT

# Settled first: a changed agent or build.sh makes a new initramfs, which is
# not what this test is about.
"$src/images/build.sh" --agent "$agent" --out "$out" >/dev/null 2>&1 || { echo "FAIL: images/build.sh"; exit 1; }

# The initramfs, built again, is the same bytes: nodes that build their own
# images can share snapshot templates, whose keys cover its hash.
initrd="$cache/$(grep -o 'initramfs-[0-9a-f]*' "$out/.keys").cpio"
[[ -f $initrd ]] || { echo "FAIL: no cached initramfs named by $out/.keys"; exit 1; }
mv "$initrd" "$keep/previous.cpio"
"$src/images/build.sh" --agent "$agent" --out "$out" >/dev/null 2>&1 || { echo "FAIL: images/build.sh"; exit 1; }
if ! cmp -s "$initrd" "$keep/previous.cpio"; then echo "FAIL: the initramfs built again differs"; exit 1; fi

echo old > "$cache/initramfs-prunetest-old.cpio"
echo kept > "$cache/initramfs-prunetest-kept.cpio"
ln "$cache/initramfs-prunetest-kept.cpio" "$keep/initramfs.cpio"  # an image set elsewhere still uses it
echo old > "$cache/rootfs-prunetest-old.erofs"
echo old > "$cache/rootfs-prunetest-old.packages"
echo prunetest-old > "$cache/rootfs-sources-prunetest"                # names the old root
echo orphan > "$cache/builder-prunetest-old.packages"                 # a list without its image
mkdir -p "$cache/kernel-prunetest-old" "$cache/.rootfs.prunetest/root"
echo old > "$cache/kernel-prunetest-old/vmlinux"
before=$(cat "$out/manifest")

log=$("$src/images/build.sh" --agent "$agent" --out "$out" 2>&1) || { echo "$log"; exit 1; }
echo "$log"

fail=0
for p in initramfs-prunetest-old.cpio rootfs-prunetest-old.erofs rootfs-prunetest-old.packages \
  rootfs-sources-prunetest builder-prunetest-old.packages kernel-prunetest-old .rootfs.prunetest; do
  if [[ -e "$cache/$p" ]]; then echo "FAIL: $p should have been removed"; fail=1; fi
done
if [[ ! -e "$cache/initramfs-prunetest-kept.cpio" ]]; then echo "FAIL: a hard-linked entry was removed"; fail=1; fi
# The image set itself is untouched and every file it names still in place.
if [[ "$(cat "$out/manifest")" != "$before" ]]; then echo "FAIL: the manifest changed"; fail=1; fi
while read -r sha role file _; do
  [[ $sha == "#" ]] && continue
  if [[ "$(sha256sum "$out/$file" | cut -d' ' -f1)" != "$sha" ]]; then echo "FAIL: $file ($role) differs"; fail=1; fi
done < "$out/manifest"
if ! grep -q "removed [0-9]* cache entries" <<< "$log"; then echo "FAIL: build.sh did not report its removals"; fail=1; fi
[[ $fail == 0 ]] && echo "cache pruned: planted entries removed, the hard-linked one and the image set kept"
exit $fail
