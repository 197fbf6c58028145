#!/usr/bin/env python3
"""Writes a tiny Python package index for the package tests, from projects
defined here: wheels built by hand (a wheel is a zip with its metadata and
a RECORD of hashes), and PEP 503 simple pages linking them with their
SHA-256. Beside it, DIR/debian is a Debian archive (suite "sbx", component
"main") of two packages made with dpkg-deb, its InRelease signed by a key
made for it; DIR/debian/keyring.gpg is that key. net_hosts.py --index=DIR
serves both.

  make_index.py DIR

mypkg 1.0 depends on sbxdep 2.0, so a layer for mypkg==1.0 must lock both;
sbxhello 1.0-1 depends on sbxhello-data 1.0-1 likewise.
"""
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

PROJECTS = [
    # name, version, requirements, module source
    ("sbxdep", "2.0", [], 'VALUE = 2\n'),
    ("mypkg", "1.0", ["sbxdep==2.0"],
     '__version__ = "1.0"\nimport sbxdep\n\ndef answer():\n    return sbxdep.VALUE * 21\n'),
    ("lonely", "0.3", [], '__version__ = "0.3"\n'),
]


def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel(name, version, requires, source):
    dist = "%s-%s.dist-info" % (name, version)
    files = {
        "%s/__init__.py" % name: source.encode(),
        dist + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version) +
                             "".join("Requires-Dist: %s\n" % r for r in requires)).encode(),
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: sandboxd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        dist + "/top_level.txt": (name + "\n").encode(),
    }
    record = "".join("%s,%s,%d\n" % (path, record_hash(data), len(data)) for path, data in files.items())
    record += dist + "/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in list(files.items()) + [(dist + "/RECORD", record.encode())]:
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return out.getvalue()


# name, version, depends, {path: (mode, content)}. sbxhello ships a file
# under /bin (the guest's /bin is a link to /usr/bin) and a setuid one;
# sbxhello-data a Python module.
DEBS = [
    ("sbxhello-data", "1.0-1", "", {"usr/share/sbxhello/greeting": (0o644, "from a Debian layer\n"),
                                    "usr/lib/python3/dist-packages/sbxhellomod.py": (0o644, "VALUE = 'module'\n")}),
    ("sbxhello", "1.0-1", "sbxhello-data (= 1.0-1)", {
        "usr/bin/sbxhello": (0o755, "#!/bin/sh\necho \"hello $(cat /usr/share/sbxhello/greeting)\"\n"),
        "bin/sbxhello-old-path": (0o755, "#!/bin/sh\necho old path\n"),
        "usr/bin/sbxhello-suid": (0o4755, "#!/bin/sh\nid -u\n"),
    }),
]


def deb(work, name, version, depends, files):
    tree = os.path.join(work, name)
    os.makedirs(os.path.join(tree, "DEBIAN"))
    for path, (mode, content) in files.items():
        full = os.path.join(tree, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(content)
        os.chmod(full, mode)
    control = "Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: sandboxd tests <t@example.test>\n" % (name, version)
    if depends:
        control += "Depends: %s\n" % depends
    control += "Description: sandboxd test package %s\n" % name
    with open(os.path.join(tree, "DEBIAN", "control"), "w") as f:
        f.write(control)
    out = os.path.join(work, "%s_%s_all.deb" % (name, version))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, out], check=True, capture_output=True)
    return out, control


def debian_archive(root):
    archive = os.path.join(root, "debian")
    pool = os.path.join(archive, "pool")
    lists = os.path.join(archive, "dists", "sbx", "main", "binary-amd64")
    os.makedirs(pool)
    os.makedirs(lists)
    work = tempfile.mkdtemp(prefix="sandboxd-debs.")
    home = tempfile.mkdtemp(prefix="sandboxd-gpg.")
    try:
        stanzas = []
        for name, version, depends, files in DEBS:
            built, control = deb(work, name, version, depends, files)
            data = open(built, "rb").read()
            filename = "pool/" + os.path.basename(built)
            shutil.copy(built, os.path.join(archive, filename))
            stanzas.append(control + "Filename: %s\nSize: %d\nSHA256: %s\n" % (filename, len(data), hashlib.sha256(data).hexdigest()))
        packages = "\n".join(stanzas).encode()
        with open(os.path.join(lists, "Packages"), "wb") as f:
            f.write(packages)
        release = ("Origin: sandboxd-tests\nSuite: sbx\nCodename: sbx\nArchitectures: amd64 all\nComponents: main\n"
                   "Date: %s\nSHA256:\n %s %d main/binary-amd64/Packages\n"
                   % (time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()), hashlib.sha256(packages).hexdigest(), len(packages)))
        dists = os.path.join(archive, "dists", "sbx")
        with open(os.path.join(dists, "Release"), "w") as f:
            f.write(release)
        gpg = ["gpg", "--batch", "--quiet", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(gpg + ["--quick-gen-key", "sandboxd test archive", "ed25519", "sign", "never"], check=True, capture_output=True)
        subprocess.run(gpg + ["--clearsign", "-o", os.path.join(dists, "InRelease"), os.path.join(dists, "Release")],
                       check=True, capture_output=True)
        key = subprocess.run(gpg + ["--export"], check=True, capture_output=True).stdout
        with open(os.path.join(archive, "keyring.gpg"), "wb") as f:
            f.write(key)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main():
    root = sys.argv[1]
    debian_archive(root)
    os.makedirs(os.path.join(root, "files"), exist_ok=True)
    for name, version, requires, source in PROJECTS:
        data = wheel(name, version, requires, source)
        filename = "%s-%s-py3-none-any.whl" % (name, version)
        with open(os.path.join(root, "files", filename), "wb") as f:
            f.write(data)
        page_dir = os.path.join(root, "simple", name)
        os.makedirs(page_dir, exist_ok=True)
        with open(os.path.join(page_dir, "index.html"), "w") as f:
            f.write('<!DOCTYPE html><html><body>\n<a href="../../files/%s#sha256=%s">%s</a>\n</body></html>\n'
                    % (filename, hashlib.sha256(data).hexdigest(), filename))


main()
