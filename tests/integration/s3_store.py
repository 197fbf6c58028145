#!/usr/bin/python3
"""A small S3-compatible object store on loopback, for the shared cache tests.

Path-style GET, HEAD and PUT of objects kept as files under DIR/objects/;
with --access-key and --secret, every request must carry a valid AWS
Signature Version 4 (checked here independently of the daemon's signer),
else 403 SignatureDoesNotMatch, as S3 answers. A PUT's body must match its
x-amz-content-sha256. Each request is logged to DIR/requests.log as
"METHOD PATH STATUS". The port goes to DIR/port once it listens.

usage: s3_store.py DIR [--access-key K --secret S] [--region R]
"""
import argparse
import hashlib
import hmac
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_OBJECT = 4 << 30


def error_xml(code):
    return ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code></Error>' % code).encode()


class Store(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3-test"

    def log_message(self, *args):
        pass

    def log_request_line(self, status):
        with self.server.log_lock, open(os.path.join(self.server.dir, "requests.log"), "a") as f:
            f.write("%s %s %d\n" % (self.command, self.path, status))

    def reply(self, status, body=b"", head=False, content_type="application/xml"):
        self.log_request_line(status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", content_type)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def object_path(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or any(p in (".", "..") for p in parts):
            return None
        return os.path.join(self.server.dir, "objects", *parts)

    def signature_ok(self, payload_hash):
        key, secret = self.server.access_key, self.server.secret
        if not key:
            return True
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return False
        fields = dict(f.strip().split("=", 1) for f in auth[len("AWS4-HMAC-SHA256 "):].split(",") if "=" in f)
        try:
            akid, date, region, service, term = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
        except (KeyError, ValueError):
            return False
        if akid != key or region != self.server.region or service != "s3" or term != "aws4_request":
            return False
        if "host" not in signed or "x-amz-date" not in signed:
            return False
        amz_date = self.headers.get("x-amz-date", "")
        if not amz_date.startswith(date):
            return False
        canonical_headers = "".join(
            "%s:%s\n" % (h, " ".join((self.headers.get(h) or "").split())) for h in signed)
        split = urllib.parse.urlsplit(self.path)
        canonical = "\n".join([self.command, split.path, split.query, canonical_headers, ";".join(signed),
                               payload_hash])
        scope = "/".join([date, region, service, term])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + secret).encode()
        for part in (date, region, service, term):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("Signature", ""))

    def read_get(self, head):
        declared = self.headers.get("x-amz-content-sha256", hashlib.sha256(b"").hexdigest())
        if not self.signature_ok(declared):
            return self.reply(403, error_xml("SignatureDoesNotMatch"), head)
        path = self.object_path()
        if path is None or not os.path.isfile(path):
            return self.reply(404, error_xml("NoSuchKey"), head)
        with open(path, "rb") as f:
            body = f.read()
        self.reply(200, body, head, "application/octet-stream")

    def do_GET(self):
        self.read_get(False)

    def do_HEAD(self):
        self.read_get(True)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "-1"))
        if length < 0 or length > MAX_OBJECT:
            self.close_connection = True
            return self.reply(400, error_xml("MissingContentLength"))
        body = self.rfile.read(length)
        declared = self.headers.get("x-amz-content-sha256", "")
        if not self.signature_ok(declared):
            return self.reply(403, error_xml("SignatureDoesNotMatch"))
        if declared != "UNSIGNED-PAYLOAD" and declared != hashlib.sha256(body).hexdigest():
            return self.reply(400, error_xml("XAmzContentSHA256Mismatch"))
        path = self.object_path()
        if path is None:
            return self.reply(400, error_xml("InvalidURI"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "wb") as f:
            f.write(body)
        os.rename(path + ".part", path)
        self.reply(200)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--access-key", default="")
    ap.add_argument("--secret", default="")
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    server.daemon_threads = True
    server.dir, server.access_key, server.secret, server.region = args.dir, args.access_key, args.secret, args.region
    server.log_lock = threading.Lock()
    os.makedirs(os.path.join(args.dir, "objects"), exist_ok=True)
    with open(os.path.join(args.dir, "port.tmp"), "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(os.path.join(args.dir, "port.tmp"), os.path.join(args.dir, "port"))
    # Ends with its parent: stdin closes.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
