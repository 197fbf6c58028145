#!/bin/bash
# Installs everything sandboxd needs on Debian 12, builds it, builds the guest
# images, and shows a real sandboxed run. Run as root (apt, debootstrap).
# Safe to run again: every step is a no-op when its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  # build
  build-essential cmake pkg-config
  # libraries
  libuv1-dev libmsgpack-cxx-dev libsystemd-dev libseccomp-dev libcap-dev libzstd-dev libssl-dev doctest-dev
  # the shared caches' object store client (daemon/object_store.cc)
  libcurl4-openssl-dev
  # VMs and guest images
  qemu-system-x86 debootstrap debian-archive-keyring gnupg erofs-utils cpio xz-utils
  # the guest kernel, built from Debian's source (images/kernel/)
  linux-source-6.1 bc bison flex libelf-dev
  # D-Bus interface and its tests (dbus-daemon, busctl)
  dbus-daemon systemd
  # benchmark peer
  bubblewrap
  # compiling the AppArmor profiles and the SELinux module in the tests
  apparmor checkpolicy semodule-utils
  # the fuzz test (tests/fuzz/run.sh): clang, and its libFuzzer and sanitizer
  # runtimes, which clang only recommends
  clang libclang-rt-14-dev
  # the Python client (python/): its msgpack and zstd, pytest for its suite,
  # setuptools and venv/pip to install it without the package index
  python3-msgpack python3-zstandard python3-pytest python3-setuptools python3-venv python3-pip
  # sandbox-gateway's HTTP server (gateway/), and the Prometheus text parser
  # its tests read the metrics with
  libcpp-httplib-dev python3-prometheus-client
  # the router suite's check of the Kubernetes manifests in deploy/
  python3-yaml
)

if [[ $EUID -ne 0 ]]; then
  echo "setup.sh: run as root (it installs packages and builds a root image with debootstrap)" >&2
  exit 1
fi

echo "==> installing Debian packages"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# apt-get download (kernel image) and debootstrap need fresh package lists.
apt-get update -qq
if [[ ${#missing[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

echo "==> users and groups (sysusers.d: qemu-vm runs each QEMU, members of sandbox may connect)"
systemd-sysusers "$PWD/systemd/sandboxd.sysusers"

echo "==> building guest images (cached by content hash)"
images/build.sh --agent build/bin/sandbox-agent --out build/images

echo "==> a sandboxed run"
demo=$(mktemp -d /tmp/sandboxd-demo.XXXXXX)
# A minimal daemon for the demo: no warm pool or snapshots to build first.
build/bin/sandboxd --socket "$demo/sandboxd.sock" --images build/images --state-dir "$demo" \
  --pool-python 0 --pool-javascript 0 --pool-raw 0 --snapshots off >"$demo/sandboxd.log" 2>&1 &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$demo"; }
trap cleanup EXIT
for _ in $(seq 600); do [[ -S "$demo/sandboxd.sock" ]] && break; sleep 0.1; done
ctl() {
  local shown=""
  for a in "$@"; do [[ $a == -* ]] && shown+=" $a" || shown+=" '$a'"; done
  echo "\$ sandboxctl run$shown"
  build/bin/sandboxctl run --socket "$demo/sandboxd.sock" "$@"
}
ctl 'print("Hello from sandbox")'
ctl -l javascript 'console.log(6*7)'
ctl -l raw 'echo $((6*7)); uname -r'
grep -m1 'accelerator' "$demo/sandboxd.log" | sed 's/^<[0-9]>//'
echo "==> ready. Run the tests with ./test.sh"
