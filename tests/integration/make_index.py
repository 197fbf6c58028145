#!/usr/bin/env python3
"""Writes a tiny Python package index for the package tests, from projects
defined here: wheels built by hand (a wheel is a zip with its metadata and
a RECORD of hashes), and PEP 503 simple pages linking them with their
SHA-256. net_hosts.py --index=DIR serves the result.

  make_index.py DIR

mypkg 1.0 depends on sbxdep 2.0, so a layer for mypkg==1.0 must lock both.
"""
import base64
import hashlib
import io
import os
import sys
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


def main():
    root = sys.argv[1]
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
