#!/bin/bash
# Builds the guest images from Debian packages only:
#   vmlinux          the guest kernel, uncompressed (PVH entry; decompressing
#                    a bzImage costs seconds under TCG): by default built from
#                    Debian's linux-source with images/kernel/sandbox.config
#                    (everything built in, no ACPI, no modules); with
#                    --kernel debian, Debian's linux-image-amd64 as shipped
#   initramfs.cpio   the agent as /init, plus the virtio/erofs modules it
#                    loads when the kernel is Debian's
#   rootfs.erofs     read-only root with python3, nodejs, bash and the
#                    everyday tools (GUEST_TOOLS), from Debian's bookworm
#                    archive only
#   packages         "<package>=<version>" lines: the root's own dpkg database
#   builder.erofs    the package builder's root: rootfs.erofs plus pip, npm
#                    and erofs-utils (BUILDER_PACKAGES), booted with the same
#                    kernel and initramfs. It runs none of a run's own code:
#                    only pip and npm installing the dependencies a run
#                    declares, and mkfs.erofs packing them into a layer
#   builder.packages its dpkg database, like packages
#   manifest         "<sha256> <role> <file>" lines the daemon verifies (the
#                    kernel's line also names its release, `uname -r`, and
#                    "noacpi" when the kernel finds its devices on the
#                    command line)
#
# Every expensive step is cached under --cache by a key over its inputs
# (package versions, Debian's package lists, this script, the agent
# binary), so a second run with the same inputs only re-checks the keys.
# Entries other keys replaced are removed at the end unless an image
# directory still has them (hard links), and builds sharing a cache take
# turns.
#
# usage: images/build.sh --agent PATH --out DIR [--cache DIR] [--kernel sandbox|debian]
set -euo pipefail

AGENT=""
KERNEL=sandbox
OUT=""
CACHE="${SANDBOXD_IMAGE_CACHE:-/var/cache/sandboxd/images}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --agent) AGENT="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --cache) CACHE="$2"; shift 2 ;;
        --kernel) KERNEL="$2"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ -n "$AGENT" && -n "$OUT" ]] || { echo "build.sh: --agent and --out are required" >&2; exit 2; }
[[ -x "$AGENT" ]] || { echo "build.sh: agent '$AGENT' is not an executable" >&2; exit 2; }
[[ "$KERNEL" == sandbox || "$KERNEL" == debian ]] || { echo "build.sh: --kernel is sandbox or debian, not '$KERNEL'" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "build.sh: debootstrap needs root" >&2; exit 2; }

# Packages the guest root carries beyond debootstrap's minbase.
# libnss-myhostname resolves whatever hostname the guest has been given.
ROOT_PACKAGES="python3,nodejs,libnss-myhostname"
# The everyday tools code written for a workstation shells out to, installed
# afterwards with apt (--no-install-recommends), each for a reason. minbase
# already has coreutils, grep, sed, gawk/mawk, findutils, tar, gzip, diff.
GUEST_TOOLS=(
    ca-certificates  # the system CA store in /etc/ssl/certs: Python's ssl, curl, git and Node verify TLS with it
    curl             # HTTP(S) from the shell; `curl | jq` is the usual pairing
    git              # clone, diff, apply, commit; Debian's git also brings perl, which its scripted commands need
    jq               # JSON on the command line
    sqlite3          # the sqlite3 shell (Python's sqlite3 module is part of python3 already)
    unzip zip        # .zip archives, the commonest download format, both ways
    file             # what a file is, by its content (libmagic)
    less             # the pager that git, `man`-style help and scripts that call $PAGER expect
    patch            # applies unified diffs, the form model-written edits often take
    procps           # ps, top, free, pgrep, pkill, watch
    xz-utils bzip2   # .xz and .bz2 archives, and tar's -J and -j (gzip is in minbase)
    tzdata           # /usr/share/zoneinfo: TZ=Europe/Paris, zoneinfo, date -d with zones
    python3-venv     # python3 -m venv and ensurepip, with Debian's pip and setuptools wheels
)
# What the builder root adds to the guest root: the package managers that
# fill layers, and mkfs.erofs to pack what they installed into an image.
BUILDER_PACKAGES="python3-pip npm erofs-utils"
# Modules the agent loads from Debian's kernel, in dependency order.
# crc32c_generic must precede libcrc32c because the guest has no modprobe to
# satisfy its crypto request. The sandbox kernel has all of it built in.
DEBIAN_MODULES="virtio_ring virtio virtio_mmio virtio_blk virtio_console virtio-rng crc32c_generic libcrc32c erofs overlay"
# The kernel source sandbox.config is written against: a new major version
# needs the fragment reviewed, so it is named, not taken from "linux-source".
KERNEL_SOURCE_PKG=linux-source-6.1
# Bump when the kernel or root steps below change meaning: they take
# minutes, so they are cached by what goes into them (package lists and
# versions), not by this file.
KERNEL_RECIPE_VERSION=2
RECIPE_VERSION=5
BUILDER_RECIPE_VERSION=3

SCRIPT_HASH=$(sha256sum "$0" | cut -c1-16)
mkdir -p "$CACHE" "$OUT"
log() { echo "images: $*" >&2; }
# One build at a time per cache: the pruning at the end must not remove
# what another build has just made and not yet linked.
exec 9>"$CACHE/.lock"
flock -n 9 || { log "waiting for another build using $CACHE"; flock 9; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# Every Python module in the tree at $1 gets a bytecode file that Python
# loads without looking at the source. mkfs.erofs -T0 gives every file
# one fixed mtime, which no timestamp-checked .pyc (what dpkg leaves)
# matches: Python would compile each module from source at every import,
# seconds under emulation, and could not cache the result on a read-only
# root. The images never change under their bytecode, as layers' don't.
unchecked_pycs() {
    # The tree's own Python directories, globbed inside it. A file that does
    # not compile (test data made to fail) is left as it is.
    chroot "$1" /bin/sh -c 'exec /usr/bin/python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
        /usr/lib/python3 /usr/lib/python3.*/' > "$2" 2>&1 || true
    # The flags word of an unchecked hash-based .pyc is 1.
    chroot "$1" /usr/bin/python3 -c 'import glob, sys
paths = glob.glob("/usr/lib/python3.*/json/__pycache__/__init__.cpython-*.pyc")
sys.exit(0 if paths and open(paths[0], "rb").read(8)[4:8] == b"\1\0\0\0" else 1)' \
        || { tail -20 "$2" >&2; echo "build.sh: Python bytecode in $1 is not unchecked" >&2; exit 1; }
}

# The Debian mirror comes from this machine's apt configuration, never a
# hard-coded host. Only sources whose Release file says "Origin: Debian"
# count: other repositories the host may use (newer nodejs and the like)
# never reach the guest.
DEBIAN_TARGETS=$(apt-get indextargets --format '$(CODENAME) $(SITE) $(FILENAME)' 'Identifier: Packages' \
    'Origin: Debian' 'Component: main' 'Architecture: amd64')
apt_site() { awk -v s="$1" '$1 == s { print $2; exit }' <<< "$DEBIAN_TARGETS"; }
debian_index() { awk -v s="$1" '$1 == s { print $3; exit }' <<< "$DEBIAN_TARGETS"; }
MIRROR=$(apt_site bookworm)
[[ -n "$MIRROR" ]] || { echo "build.sh: no Debian bookworm main source in apt configuration (run apt-get update)" >&2; exit 1; }
SECURITY=$(apt_site bookworm-security)
UPDATES=$(apt_site bookworm-updates)

# The newest version of a package in those Debian suites, whatever the
# host's own pins and candidates are.
debian_version() {
    apt-cache madison "$1" | awk -F' *[|] *' -v m="$MIRROR" -v u="$UPDATES" -v s="$SECURITY" '{
        split($3, w, " ")
        if ((w[1] == m && w[2] == "bookworm/main") || (w[1] == u && w[2] == "bookworm-updates/main") ||
            (w[1] == s && w[2] == "bookworm-security/main")) { print $2; exit }
    }'
}

# ---------------------------------------------------------------- kernel
if [[ "$KERNEL" == sandbox ]]; then
    # Cached by the source package's version, the fragment, the patches and the script.
    KSRC_VER=$(dpkg-query -W -f '${Version}' "$KERNEL_SOURCE_PKG" 2>/dev/null || true)
    KSRC_TAR=$(dpkg -L "$KERNEL_SOURCE_PKG" 2>/dev/null | grep -m1 '\.tar\.xz$' || true)
    [[ -n "$KSRC_VER" && -f "$KSRC_TAR" ]] \
        || { echo "build.sh: $KERNEL_SOURCE_PKG is not installed (setup.sh installs it; or use --kernel debian)" >&2; exit 1; }
    KDIR_SRC="$(cd "$(dirname "$0")" && pwd)/kernel"
    KEY=$( (echo "$KERNEL_SOURCE_PKG $KSRC_VER"; cat "$KDIR_SRC/sandbox.config" "$KDIR_SRC"/*.patch "$KDIR_SRC/build.sh") | sha256sum | cut -c1-16)
    KVER="sandbox-$KEY"
    KDIR="$CACHE/kernel-$KVER"
    MODULES=""
    KFLAGS=" noacpi"
    if [[ ! -f "$KDIR/done" ]]; then
        log "kernel from $KERNEL_SOURCE_PKG $KSRC_VER with kernel/sandbox.config (minutes, once)"
        work=$(mktemp -d "$CACHE/.kernel.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        TMPDIR="$work" "$KDIR_SRC/build.sh" --source "$KSRC_TAR" --out "$work/out" > "$work/build.log" 2>&1 \
            || { tail -30 "$work/build.log" >&2; exit 1; }
        rm -rf "$work/out/modules" && mkdir "$work/out/modules"
        echo "$(cat "$work/out/release") from $KERNEL_SOURCE_PKG $KSRC_VER" > "$work/out/description"
        rm -rf "$KDIR"
        mv "$work/out" "$KDIR"
        touch "$KDIR/done"
        rm -rf "$work"
        trap - EXIT
    fi
    KRELEASE=$(cat "$KDIR/release")
    KDESC=$(cat "$KDIR/description")
else
    MODULES=$DEBIAN_MODULES
    KFLAGS=""
    KMETA=$(debian_version linux-image-amd64)
    KPKG=$(apt-cache show "linux-image-amd64=$KMETA" 2>/dev/null \
        | awk '/^Depends:/ { if (match($0, /linux-image-[0-9][^ ,]*/)) print substr($0, RSTART, RLENGTH); exit }')
    KVER=$(debian_version "$KPKG")
    [[ -n "$KPKG" && -n "$KVER" && "$KVER" != "(none)" ]] || { echo "build.sh: cannot resolve linux-image-amd64" >&2; exit 1; }
    KDIR="$CACHE/kernel-$KVER-r$KERNEL_RECIPE_VERSION"
    if [[ ! -f "$KDIR/done" ]]; then
        log "kernel $KPKG $KVER"
        work=$(mktemp -d "$CACHE/.kernel.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        (cd "$work" && apt-get download -q "$KPKG=$KVER" >/dev/null 2>&1) \
            || { echo "build.sh: apt-get download $KPKG=$KVER failed" >&2; exit 1; }
        dpkg-deb -x "$work"/*.deb "$work/x"
        vmlinuz=$(echo "$work"/x/boot/vmlinuz-*)
        # The bzImage wraps an XZ stream; find its magic and decompress from there.
        off=$(LC_ALL=C grep -aboP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1 || true)
        [[ -n "$off" ]] || { echo "build.sh: no XZ payload in $vmlinuz" >&2; exit 1; }
        tail -c +$((off + 1)) "$vmlinuz" | xz -dc 2>/dev/null > "$work/vmlinux" || true
        [[ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" == "177ELF" ]] \
            || { echo "build.sh: extracted kernel is not an ELF image" >&2; exit 1; }
        mkdir -p "$work/out/modules"
        for m in $MODULES; do
            ko=$(find "$work"/x/lib/modules -name "$m.ko" | head -1)
            [[ -n "$ko" ]] || { echo "build.sh: module $m not in $KPKG" >&2; exit 1; }
            cp "$ko" "$work/out/modules/"
        done
        mv "$work/vmlinux" "$work/out/vmlinux"
        echo "$KPKG $KVER" > "$work/out/release"
        rm -rf "$KDIR"
        mv "$work/out" "$KDIR"
        touch "$KDIR/done"
        rm -rf "$work"
        trap - EXIT
    fi
    KRELEASE=${KPKG#linux-image-}
    KDESC=$(cat "$KDIR/release")
fi

# ---------------------------------------------------------------- rootfs
# The root is cached under two keys. Its name is a hash of what it contains:
# every installed package and version, read from its own dpkg status. A
# small index maps the Debian archive's state (the bookworm, -updates and
# -security package lists this machine last fetched, and the recipe) to that
# name, so a run with nothing new is a cache hit without building anything,
# and a rebuild that installs the same packages reuses the same image.
INDEXES=""
for suite in bookworm bookworm-updates bookworm-security; do
    f=$(debian_index "$suite")
    [[ -z "$f" ]] && continue
    [[ -f "$f" ]] || { echo "build.sh: $suite package list '$f' missing (run apt-get update)" >&2; exit 1; }
    INDEXES+="$f "
done
SOURCES_KEY=$( (echo "$RECIPE_VERSION $ROOT_PACKAGES ${GUEST_TOOLS[*]} $MIRROR $UPDATES $SECURITY"; cat $INDEXES | sha256sum) \
    | sha256sum | cut -c1-16)
SOURCES_INDEX="$CACHE/rootfs-sources-$SOURCES_KEY"
ROOT_KEY=$(cat "$SOURCES_INDEX" 2>/dev/null || true)
if [[ -z "$ROOT_KEY" || ! -f "$CACHE/rootfs-$ROOT_KEY.erofs" || ! -f "$CACHE/rootfs-$ROOT_KEY.packages" ]]; then
    log "root filesystem: debootstrap bookworm from $MIRROR"
    work=$(mktemp -d "$CACHE/.rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include="$ROOT_PACKAGES" bookworm "$work/root" "$MIRROR" \
        > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    {
        echo "deb $MIRROR bookworm main"
        [[ -n "$UPDATES" ]] && echo "deb $UPDATES bookworm-updates main"
        [[ -n "$SECURITY" ]] && echo "deb $SECURITY bookworm-security main"
    } > "$work/root/etc/apt/sources.list"
    # Files no run can use, kept out of everything dpkg installs from here
    # on (the upgrade, the tools, later layers); debootstrap's own are
    # removed below.
    cat > "$work/root/etc/dpkg/dpkg.cfg.d/sandboxd-lean" <<'EXCLUDES'
# sandboxd guest root (images/build.sh): files no run uses.
# Documentation and translations: nobody reads them in a sandbox.
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
# C headers for building perl XS modules (8 MB): the guest has no compiler.
path-exclude=/usr/lib/x86_64-linux-gnu/perl/5.*/CORE/*.h
# git's servers, mail and WebDAV senders, and scalar's background upkeep
# (2 MB each): the guest accepts no connections and runs no schedulers.
path-exclude=/usr/lib/git-core/git-daemon
path-exclude=/usr/lib/git-core/git-http-backend
path-exclude=/usr/lib/git-core/git-http-push
path-exclude=/usr/lib/git-core/git-imap-send
path-exclude=/usr/lib/git-core/git-shell
path-exclude=/usr/bin/git-shell
path-exclude=/usr/lib/git-core/scalar
path-exclude=/usr/bin/scalar
EXCLUDES
    # Security fixes for the interpreters the guest exposes to hostile code,
    # then the tools, from the same Debian suites.
    chroot "$work/root" /usr/bin/env DEBIAN_FRONTEND=noninteractive /bin/sh -c \
        'apt-get -qq update && apt-get -qq -y upgrade && apt-get -qq -y --no-install-recommends install "$@"' \
        sh "${GUEST_TOOLS[@]}" > "$work/upgrade.log" 2>&1 || { tail -20 "$work/upgrade.log" >&2; exit 1; }
    # Node must verify TLS with the same store as everything else. Debian
    # builds it so (configure --openssl-use-def-ca-store): its default is
    # OpenSSL's store, /etc/ssl/certs, not the Mozilla list compiled into
    # libnode (which tls.rootCertificates still shows).
    chroot "$work/root" /usr/bin/node -p \
        'process.config.target_defaults.defines.includes("NODE_OPENSSL_CERT_STORE")' 2>/dev/null | grep -qx true \
        || { echo "build.sh: Debian's nodejs no longer defaults to OpenSSL's CA store" >&2; exit 1; }
    chroot "$work/root" useradd --no-create-home --uid 1000 --user-group \
        --home-dir /home/sandbox --shell /bin/bash sandbox
    install -d -m 0755 -o 1000 -g 1000 "$work/root/home/sandbox"
    echo sandbox > "$work/root/etc/hostname"
    # localhost for servers and clients inside one run; the image's own
    # hostname here, any other (a snapshot clone's) from nss-myhostname.
    printf '%s\n' "127.0.0.1	localhost" "127.0.1.1	sandbox" "::1	localhost ip6-localhost ip6-loopback" \
        "ff02::1	ip6-allnodes" "ff02::2	ip6-allrouters" > "$work/root/etc/hosts"
    grep -q '^hosts:.*myhostname' "$work/root/etc/nsswitch.conf" \
        || { echo "build.sh: nsswitch.conf does not use myhostname" >&2; exit 1; }
    # debootstrap copies this machine's resolver configuration; the guest
    # has no network, and the host's configuration is none of its business.
    rm -f "$work/root/etc/resolv.conf"
    : > "$work/root/etc/machine-id"
    unchecked_pycs "$work/root" "$work/compileall.log"
    # Nothing in the guest may gain privilege through a file mode.
    find "$work/root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
    rm -rf "$work"/root/var/lib/apt/lists/* "$work"/root/var/cache/apt/* \
        "$work"/root/var/cache/debconf/*-old "$work"/root/var/log/* \
        "$work"/root/usr/share/doc "$work"/root/usr/share/man "$work"/root/usr/share/info \
        "$work"/root/usr/share/locale "$work"/root/tmp/* "$work"/root/run/*
    # What the root holds, from its own package database.
    dpkg-query --admindir="$work/root/var/lib/dpkg" -W -f '${Status} ${Package}=${Version}\n' \
        | awk '$1 == "install" && $3 == "installed" { print $4 }' | LC_ALL=C sort > "$work/packages"
    grep -q '^nodejs=' "$work/packages" || { echo "build.sh: no nodejs in the built root" >&2; exit 1; }
    ROOT_KEY=$( (echo "$RECIPE_VERSION"; cat "$work/packages") | sha256sum | cut -c1-16)
    if [[ -f "$CACHE/rootfs-$ROOT_KEY.erofs" ]]; then
        log "root filesystem: same packages as rootfs-$ROOT_KEY, reused"
    else
        # Fixed timestamp and UUID so the same tree gives the same image.
        mkfs.erofs -T0 -U 6c3f3e1e-5b1d-4d7e-9a53-73616e64626f "$work/rootfs.erofs" "$work/root" \
            > "$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; exit 1; }
        mv "$work/rootfs.erofs" "$CACHE/rootfs-$ROOT_KEY.erofs"
    fi
    mv "$work/packages" "$CACHE/rootfs-$ROOT_KEY.packages"
    echo "$ROOT_KEY" > "$work/sources"
    mv "$work/sources" "$SOURCES_INDEX"
    rm -rf "$work"
    trap - EXIT
fi
ROOTFS="$CACHE/rootfs-$ROOT_KEY.erofs"
# The interpreters actually inside, for the manifest's description.
ROOT_VERSIONS=$(grep -E '^(python3\.[0-9]+|nodejs|bash)=' "$CACHE/rootfs-$ROOT_KEY.packages" | tr '\n' ' ')
ROOT_VERSIONS=${ROOT_VERSIONS% }

# ---------------------------------------------------------------- builder
# The root above, unpacked, with BUILDER_PACKAGES installed on top from the
# same Debian suites: no second debootstrap, and every package the two share
# is the same version. Keyed by the root it starts from and by the package
# lists apt resolves the additions against.
BKEY=$(echo "$BUILDER_RECIPE_VERSION $BUILDER_PACKAGES $ROOT_KEY $SOURCES_KEY" | sha256sum | cut -c1-16)
BUILDER="$CACHE/builder-$BKEY.erofs"
if [[ ! -f "$BUILDER" || ! -f "$CACHE/builder-$BKEY.packages" ]]; then
    log "builder root: rootfs-$ROOT_KEY plus $BUILDER_PACKAGES"
    work=$(mktemp -d "$CACHE/.builder.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # Modes, owners, symlinks and device nodes come back as they were;
    # hard links come back as copies (a few MB: perl, gzip, bzip2, unzip).
    fsck.erofs --extract="$work/root" --preserve "$ROOTFS" > "$work/extract.log" 2>&1 \
        || { tail -20 "$work/extract.log" >&2; exit 1; }
    # What the guest root itself has installed: `apt:` layers resolve
    # against this, not against the builder's additions, so a layer brings
    # every dependency the root lacks.
    install -d "$work/root/usr/share/sandboxd"
    cp "$work/root/var/lib/dpkg/status" "$work/root/usr/share/sandboxd/root-dpkg-status"
    # The root keeps its sources.list and dpkg excludes; apt reaches the
    # mirror with this machine's resolver configuration, removed below.
    cp -L /etc/resolv.conf "$work/root/etc/resolv.conf"
    chroot "$work/root" /usr/bin/env DEBIAN_FRONTEND=noninteractive /bin/sh -c \
        'apt-get -qq update && apt-get -qq -y --no-install-recommends install "$@"' \
        sh $BUILDER_PACKAGES > "$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }
    # Each tool the builder runs, run once; mkfs.erofs 1.5 has no --version,
    # so it packs a directory and fsck.erofs checks the result.
    for check in "python3 -m pip --version" "npm --version" \
        "mkfs.erofs -T0 /tmp/probe.erofs /etc/apt && fsck.erofs /tmp/probe.erofs"; do
        chroot "$work/root" /usr/bin/env HOME=/root /bin/sh -c "$check" > "$work/check.log" 2>&1 \
            || { cat "$work/check.log" >&2; echo "build.sh: builder root fails '$check'" >&2; exit 1; }
    done
    rm -f "$work/root/etc/resolv.conf"
    unchecked_pycs "$work/root" "$work/compileall.log"
    find "$work/root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
    rm -rf "$work"/root/var/lib/apt/lists/* "$work"/root/var/cache/apt/* \
        "$work"/root/var/cache/debconf/*-old "$work"/root/var/log/* \
        "$work"/root/usr/share/doc "$work"/root/usr/share/man "$work"/root/usr/share/info \
        "$work"/root/usr/share/locale "$work"/root/tmp/* "$work"/root/run/* "$work"/root/root/.npm
    dpkg-query --admindir="$work/root/var/lib/dpkg" -W -f '${Status} ${Package}=${Version}\n' \
        | awk '$1 == "install" && $3 == "installed" { print $4 }' | LC_ALL=C sort > "$work/packages"
    for p in $BUILDER_PACKAGES; do
        grep -q "^$p=" "$work/packages" || { echo "build.sh: no $p in the builder root" >&2; exit 1; }
    done
    mkfs.erofs -T0 -U 6c3f3e1e-5b1d-4d7e-9a53-6275696c6472 "$work/builder.erofs" "$work/root" \
        > "$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; exit 1; }
    mv "$work/packages" "$CACHE/builder-$BKEY.packages"
    mv "$work/builder.erofs" "$BUILDER"
    rm -rf "$work"
    trap - EXIT
fi

# ---------------------------------------------------------------- initramfs
INIT_KEY=$( (sha "$AGENT"; for m in $MODULES; do sha "$KDIR/modules/$m.ko"; done; echo "$MODULES $SCRIPT_HASH") \
    | sha256sum | cut -c1-16)
INITRD="$CACHE/initramfs-$INIT_KEY.cpio"
if [[ ! -f "$INITRD" ]]; then
    log "initramfs"
    work=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/root/lib/modules" "$work/root/dev" "$work/root/proc" "$work/root/sys" "$work/root/sysroot"
    # The initramfs stays in guest memory for the VM's life: no debug info.
    strip --strip-debug -o "$work/root/init" "$AGENT"
    chmod 0755 "$work/root/init"
    for m in $MODULES; do cp "$KDIR/modules/$m.ko" "$work/root/lib/modules/"; done
    # Empty for a kernel with everything built in.
    printf '%s\n' $MODULES > "$work/root/lib/modules/load-order"
    # One timestamp on everything, as the root has: the same agent gives the
    # same bytes on every node, and snapshot templates, whose keys cover
    # this file's hash, can be shared between nodes that built their own.
    find "$work/root" -exec touch -h -d @0 {} +
    # Uncompressed: decompression is pure cost under TCG.
    (cd "$work/root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
        | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) > "$work/initramfs.cpio"
    touch -d @0 "$work/initramfs.cpio"
    mv "$work/initramfs.cpio" "$INITRD"
    rm -rf "$work"
    trap - EXIT
fi

# ---------------------------------------------------------------- output
place() { # place SRC NAME: hard link from the cache when possible
    if [[ "$(stat -c %i "$1")" != "$(stat -c %i "$OUT/$2" 2>/dev/null || true)" ]]; then
        ln -f "$1" "$OUT/.$2.tmp" 2>/dev/null || cp "$1" "$OUT/.$2.tmp"
        mv -f "$OUT/.$2.tmp" "$OUT/$2"
    fi
}
place "$KDIR/vmlinux" vmlinux
place "$INITRD" initramfs.cpio
place "$ROOTFS" rootfs.erofs
# The root's own package list, for `sandboxctl images`: hashed like the
# images, so the daemon describes exactly the root it verified.
place "$CACHE/rootfs-$ROOT_KEY.packages" packages
place "$BUILDER" builder.erofs
place "$CACHE/builder-$BKEY.packages" builder.packages
# The guest's `uname -r` (Debian names its kernel package after it): the
# image's banner must agree.
LC_ALL=C grep -qaF "Linux version $KRELEASE " "$OUT/vmlinux" \
    || { echo "build.sh: vmlinux is not release $KRELEASE" >&2; exit 1; }
DESCRIPTION="sandboxd guest images: sha256 role file [kernel release [noacpi]]; kernel $KDESC; root $ROOT_VERSIONS"
keys="kernel-$KVER rootfs-$ROOT_KEY builder-$BKEY initramfs-$INIT_KEY $DESCRIPTION"
if [[ "$(cat "$OUT/.keys" 2>/dev/null || true)" != "$keys" || ! -f "$OUT/manifest" ]]; then
    {
        echo "# $DESCRIPTION"
        echo "$(sha "$OUT/vmlinux") kernel vmlinux $KRELEASE$KFLAGS"
        echo "$(sha "$OUT/initramfs.cpio") initrd initramfs.cpio"
        echo "$(sha "$OUT/rootfs.erofs") rootfs rootfs.erofs"
        echo "$(sha "$OUT/packages") packages packages"
        echo "$(sha "$OUT/builder.erofs") builder builder.erofs"
        echo "$(sha "$OUT/builder.packages") builder_packages builder.packages"
    } > "$OUT/.manifest.tmp"
    mv "$OUT/.manifest.tmp" "$OUT/manifest"
    echo "$keys" > "$OUT/.keys"
    log "images ready in $OUT"
else
    log "images up to date in $OUT"
fi

# ---------------------------------------------------------------- cache
# A security update gives a new root and builder (650 MB together), a
# changed agent a new initramfs: what the keys above no longer name goes,
# unless an image directory still has it hard-linked (another checkout, an
# older set kept on purpose). What a killed build left goes too: under the
# lock, no build is running.
current=" $(basename "$KDIR") $(basename "$ROOTFS" .erofs) $(basename "$BUILDER" .erofs) $(basename "$INITRD" .cpio) "
linked() { [[ -f "$1" && $(stat -c %h "$1") -gt 1 ]]; }
pruned=0
for e in "$CACHE"/kernel-* "$CACHE"/rootfs-*.erofs "$CACHE"/builder-*.erofs "$CACHE"/initramfs-*.cpio; do
    [[ -e "$e" ]] || continue
    name=$(basename "$e"); name=${name%.erofs}; name=${name%.cpio}
    [[ "$current" == *" $name "* ]] && continue
    if [[ -d "$e" ]]; then linked "$e/vmlinux" && continue; else linked "$e" && continue; fi
    rm -rf "$e" "$CACHE/$name.packages"
    pruned=$((pruned + 1))
done
# A package list without its image, and an index naming a root that is gone.
for e in "$CACHE"/rootfs-*.packages "$CACHE"/builder-*.packages; do
    if [[ -e "$e" && ! -e "${e%.packages}.erofs" ]]; then rm -f "$e"; pruned=$((pruned + 1)); fi
done
for e in "$CACHE"/rootfs-sources-*; do
    if [[ -e "$e" && ! -e "$CACHE/rootfs-$(cat "$e").erofs" ]]; then rm -f "$e"; pruned=$((pruned + 1)); fi
done
for e in "$CACHE"/.kernel.* "$CACHE"/.rootfs.* "$CACHE"/.builder.* "$CACHE"/.initramfs.*; do
    if [[ -e "$e" ]]; then rm -rf "$e"; pruned=$((pruned + 1)); fi
done
if [[ $pruned -gt 0 ]]; then log "removed $pruned cache entries no image set uses from $CACHE"; fi
