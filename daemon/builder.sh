# Installs one package set into a layer image (SPEC F14). sandboxd runs
# this in a builder VM, as the unprivileged user, with bash; nothing else
# runs there. The request comes in the environment, never in this text:
#   SANDBOX_BUILD_LANGUAGE  python | javascript
#   SANDBOX_BUILD_PACKAGES  the canonical specifiers, one per line, already
#                           validated by the daemon (no options, URLs, paths)
#   SANDBOX_BUILD_INDEX     the operator's index (pip) or registry (npm)
#   SANDBOX_BUILD_SOURCE    1: sdists / npm install scripts allowed
# The installer's own output goes to stderr (the daemon keeps its tail for
# errors). Stdout carries the answer only: "lock NAME==VERSION HASH" lines
# (npm: "lock NAME@VERSION INTEGRITY"; every package installed, dependencies
# included), then "image_bytes N".
# The image is written straight onto the scratch disk.
set -euo pipefail
umask 022
tree=/tmp/layer
mkdir -p "$tree"
mapfile -t packages <<< "$SANDBOX_BUILD_PACKAGES"

case "$SANDBOX_BUILD_LANGUAGE" in
python)
  binary=(--only-binary=:all:)
  [[ $SANDBOX_BUILD_SOURCE == 1 ]] && binary=()
  # Transient network errors are retried by pip with backoff; a missing
  # version or wheel fails at once. Bytecode is compiled below, not here.
  python3 -m pip install --no-cache-dir --disable-pip-version-check --no-input --no-compile \
    --break-system-packages --retries 5 --timeout 30 --index-url "$SANDBOX_BUILD_INDEX" \
    "${binary[@]}" --target "$tree/python" --report /tmp/report.json -- "${packages[@]}" >&2
  # Hash-checked bytecode stays valid whatever the image's timestamps, and
  # names the path the guest sees: a first import reads it, never compiles.
  python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -s "$tree/python" -p /run/layer/python "$tree/python" >&2
  python3 - /tmp/report.json <<'LOCK'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    archive = item.get("download_info", {}).get("archive_info", {})
    digest = archive.get("hash") or "".join("%s=%s" % kv for kv in list(archive.get("hashes", {}).items())[:1])
    print("lock %s==%s %s" % (meta["name"], meta["version"], digest.replace("=", ":", 1) or "-"))
LOCK
  ;;
javascript)
  scripts=(--ignore-scripts)
  [[ $SANDBOX_BUILD_SOURCE == 1 ]] && scripts=()
  mkdir -p /tmp/npm && cd /tmp/npm
  printf '{"name":"sandbox-layer","version":"0.0.0","private":true}\n' > package.json
  # npm retries transient fetch errors with backoff (2 s, then 10 s); a
  # missing version is final.
  npm install --no-audit --no-fund --no-update-notifier --save-exact --cache /tmp/npm-cache \
    --fetch-retries 2 --fetch-retry-mintimeout 2000 --fetch-retry-maxtimeout 10000 --registry "$SANDBOX_BUILD_INDEX" "${scripts[@]}" -- "${packages[@]}" >&2
  node - <<'LOCK'
const lock = require("/tmp/npm/package-lock.json");
for (const [path, p] of Object.entries(lock.packages || {})) {
  if (!path) continue;
  const name = path.slice(path.lastIndexOf("node_modules/") + 13);
  console.log(`lock ${name}@${p.version} ${p.integrity || "-"}`);
}
LOCK
  mv /tmp/npm/node_modules "$tree/node_modules"
  ;;
*)
  echo "unknown language '$SANDBOX_BUILD_LANGUAGE'" >&2
  exit 2
  ;;
esac

# Owned by root in the image: nothing the guest user could take for its own.
mkfs.erofs --all-root /dev/scratch "$tree" >&2
# The image's length, from its superblock (blocks << block size bits): the
# host keeps exactly that much of the scratch disk.
python3 - <<'SIZE'
import struct
with open("/dev/scratch", "rb") as f:
    f.seek(1024)
    magic, _, _, bits = struct.unpack("<IIIB", f.read(13))
    f.seek(1024 + 36)
    (blocks,) = struct.unpack("<I", f.read(4))
if magic != 0xE0F5E1E2:
    raise SystemExit("mkfs.erofs left no EROFS superblock")
print("image_bytes %d" % (blocks << bits))
SIZE
