# Installs one package set into a layer image (SPEC F14). sandboxd runs
# this in a builder VM, as the unprivileged user, with bash; nothing else
# runs there. The request comes in the environment, never in this text:
#   SANDBOX_BUILD_LANGUAGE  python | javascript | raw
#   SANDBOX_BUILD_PACKAGES  the canonical specifiers, one per line, already
#                           validated by the daemon (no options, URLs, paths);
#                           "apt:NAME=VERSION" lines are Debian packages
#   SANDBOX_BUILD_INDEX     the operator's index (pip) or registry (npm)
#   SANDBOX_BUILD_SOURCE    1: sdists / npm install scripts allowed
#   SANDBOX_BUILD_APT_SOURCES  the operator's Debian archives, one
#                           "URL SUITE COMPONENT..." per line
#   SANDBOX_BUILD_APT_KEYRING  (set above this text when the operator gave
#                           one) their OpenPGP keyring, in base64
# The installer's own output goes to stderr (the daemon keeps its tail for
# errors). Stdout carries the answer only: "lock NAME==VERSION HASH" lines
# (npm: "lock NAME@VERSION INTEGRITY"; Debian: "lock apt:NAME=VERSION
# sha256:HASH"; every package installed, dependencies included), then
# "image_bytes N".
# The image is written straight onto the scratch disk.
set -euo pipefail
umask 022
tree=/tmp/layer
mkdir -p "$tree"
apt_packages=()
packages=()
while IFS= read -r p; do
  [[ -z $p ]] && continue
  if [[ $p == apt:* ]]; then apt_packages+=("${p#apt:}"); else packages+=("$p"); fi
done <<< "$SANDBOX_BUILD_PACKAGES"

# Debian packages become a tree the guest lays over its root ("root" in
# the image). apt runs unprivileged here: it resolves against what the
# guest root has installed (not this builder's additions), downloads and
# verifies the rest against the archive's signed index, and dpkg-deb
# unpacks them. No maintainer script runs, here or in a run.
install_apt() {
  local a=/tmp/apt root=$tree/root keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local status=/usr/share/sandboxd/root-dpkg-status
  mkdir -p $a/lists/partial $a/archives/partial $a/log $a/none "$root/usr"
  if [[ -n ${SANDBOX_BUILD_APT_KEYRING:-} ]]; then
    base64 -d <<< "$SANDBOX_BUILD_APT_KEYRING" > $a/keyring.gpg
    keyring=$a/keyring.gpg
  fi
  local url suite components
  while read -r url suite components; do
    [[ -n $url ]] && echo "deb [signed-by=$keyring] $url $suite $components"
  done <<< "$SANDBOX_BUILD_APT_SOURCES" > $a/sources.list
  local opts=(-o Dir::Etc::SourceList=$a/sources.list -o Dir::Etc::SourceParts=$a/none
    -o Dir::Etc::Preferences=$a/none/preferences -o Dir::Etc::PreferencesParts=$a/none
    -o Dir::State::Lists=$a/lists -o Dir::State::status=$status -o Dir::Cache::Archives=$a/archives
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Dir::Log=$a/log -o Debug::NoLocking=1
    -o Acquire::Languages=none -o Acquire::Retries=3 -o APT::Install-Recommends=false
    -o APT::Install-Suggests=false)
  # An archive that cannot be read or verified fails the build, as does a
  # name or version it lacks.
  apt-get "${opts[@]}" -q --error-on=any update >&2
  apt-get "${opts[@]}" -q -y --download-only install -- "${apt_packages[@]}" >&2
  # Files under /bin, /lib... go where the root has them (/usr): a
  # directory there would hide the root's own.
  local d deb name version
  for d in bin sbin lib lib32 lib64 libx32; do mkdir "$root/usr/$d" && ln -s usr/$d "$root/$d"; done
  shopt -s nullglob
  for deb in $a/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink --no-same-owner -C "$root" >&2
    IFS=$'\t' read -r name version <<< "$(dpkg-deb --show --showformat='${Package}\t${Version}' "$deb")"
    echo "lock apt:$name=$version sha256:$(sha256sum < "$deb" | cut -d' ' -f1)"
  done
  shopt -u nullglob
  for d in bin sbin lib lib32 lib64 libx32; do rm "$root/$d" && rmdir --ignore-fail-on-non-empty "$root/usr/$d"; done
  # dpkg in a run knows what the layer added; nothing gains privilege
  # through a file mode; documentation as the root has it: none.
  mkdir -p "$root/var/lib/dpkg"
  python3 - "$status" "$root/var/lib/dpkg/status" $a/archives/*.deb <<'STATUS'
import subprocess, sys
base, out, debs = sys.argv[1], sys.argv[2], sys.argv[3:]
added = [subprocess.run(["dpkg-deb", "-f", d], check=True, capture_output=True, text=True).stdout.strip() for d in debs]
names = {s.split("\n", 1)[0].split(": ", 1)[1] for s in added}
kept = [s for s in open(base).read().split("\n\n") if s.strip() and s.split("\n", 1)[0].split(": ", 1)[1] not in names]
for s in added:
    first, rest = s.split("\n", 1) if "\n" in s else (s, "")
    kept.append(first + "\nStatus: install ok installed" + ("\n" + rest if rest else ""))
open(out, "w").write("\n\n".join(s.strip("\n") for s in kept) + "\n")
STATUS
  find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
  rm -rf "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale
  # Python modules get bytecode as the root's have it (unchecked, named by
  # the path the guest sees): a module that replaces one of the root's
  # must replace its bytecode too, or the root's would be loaded. A file
  # that does not compile (test data made to fail) is left as it is,
  # unless it would thus run the root's bytecode: then the build fails.
  local pydirs=("$root"/usr/lib/python3 "$root"/usr/lib/python3.*)
  for d in "${pydirs[@]}"; do
    if [[ -d $d ]]; then
      python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash -s "$root" -p / "$d" >&2 || true
    fi
  done
  python3 - "$root" <<'PYC'
import importlib.util, os, sys
root = sys.argv[1]
lib = os.path.join(root, "usr/lib")
tops = [n for n in (os.listdir(lib) if os.path.isdir(lib) else []) if n == "python3" or n.startswith("python3.")]
for top in tops:
    for where, _, files in os.walk(os.path.join(lib, top)):
        for f in files:
            path = os.path.join(where, f)
            guest = "/" + os.path.relpath(path, root)
            if f.endswith(".py") and not os.path.exists(importlib.util.cache_from_source(path)) \
                    and os.path.exists(importlib.util.cache_from_source(guest)):
                sys.exit("%s does not compile; the root's bytecode for it would run instead" % guest)
PYC
}

# In an if, not after &&: bash ignores `set -e` in a function called there.
if ((${#apt_packages[@]})); then install_apt; fi
if ((${#packages[@]})); then case "$SANDBOX_BUILD_LANGUAGE" in
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
esac; fi

# Owned by root in the image: nothing the guest user could take for its own.
mkfs.erofs --quiet --all-root /dev/scratch "$tree" >&2
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
