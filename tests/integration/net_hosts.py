#!/usr/bin/env python3
"""The "internet" of the network tests, on loopback only: a DNS server, an
HTTPS server with a self-signed certificate for its names, an HTTP server
and a TCP echo server. Names and addresses come from the command line:

  net_hosts.py DIR [--index=INDEX] NAME=ADDRESS...

Writes DIR/ports (JSON: dns, http, https, echo ports, and https_web 443 and
http_web 80 when those could be bound too), DIR/ca.pem (the
certificate the HTTPS server presents, valid for every NAME) and keeps
DIR/dns_queries up to date (one queried name per line), then serves until
stdin closes. Every server binds 127.0.0.1 (the HTTPS, HTTP and echo
servers on every ADDRESS given, which must be in 127.0.0.0/8).

With --index, the HTTP(S) servers are also a package index: /simple/NAME/
and /files/FILE from INDEX/simple/NAME/index.html and INDEX/files/FILE,
and a Debian archive under /debian/ from INDEX/debian (make_index.py
writes them), each request logged to DIR/index_requests.
"""
import http.server
import json
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading

out_dir = sys.argv[1]
index_dir = None
args = sys.argv[2:]
if args and args[0].startswith("--index="):
    index_dir = args.pop(0)[len("--index="):]
names = dict(a.split("=", 1) for a in args)
addresses = sorted(set(names.values()))
assert all(a.startswith("127.") for a in addresses), "test hosts live on loopback only"
queries_path = os.path.join(out_dir, "dns_queries")
lock = threading.Lock()


def serve_dns(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        if len(data) < 12:
            continue
        qid, flags, qd = struct.unpack(">HHH", data[:6])
        pos, labels = 12, []
        while pos < len(data) and data[pos]:
            n = data[pos]
            labels.append(data[pos + 1:pos + 1 + n].decode("latin-1"))
            pos += 1 + n
        name = ".".join(labels).lower()
        qtype = struct.unpack(">H", data[pos + 1:pos + 3])[0]
        with lock, open(queries_path, "a") as f:
            f.write(name + "\n")
        question = data[12:pos + 5]
        answers = b""
        count = 0
        if name in names and qtype == 1:
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(names[name])
            count = 1
        rcode = 0 if name in names else 3
        sock.sendto(struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0) + question + answers, peer)


def index_file(path):
    """The index file a request path names, or None."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) == 2 and parts[0] == "simple":
        return os.path.join(index_dir, "simple", parts[1], "index.html")
    if len(parts) == 2 and parts[0] == "files":
        return os.path.join(index_dir, "files", parts[1])
    if len(parts) >= 2 and parts[0] == "debian" and ".." not in parts:
        return os.path.join(index_dir, *parts)
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        # A proxy may pass a request on in absolute form (RFC 9112 3.2.2).
        if self.path.startswith(("http://", "https://")):
            self.path = "/" + self.path.split("/", 3)[3] if self.path.count("/") >= 3 else "/"
        if index_dir and self.path.startswith(("/simple/", "/files/", "/debian/")):
            return self.serve_index()
        body = ("hello from %s via %s\n" % (self.headers.get("Host", "?"), self.server.server_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def serve_index(self):
        with lock, open(os.path.join(out_dir, "index_requests"), "a") as f:
            f.write(self.path + "\n")
        path = index_file(self.path)
        if not path or ".." in path or not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if path.endswith(".html") else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Echo(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    key, cert = os.path.join(out_dir, "key.pem"), os.path.join(out_dir, "ca.pem")
    san = ",".join("DNS:" + n for n in names)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=sandboxd test", "-addext", "subjectAltName=" + san,
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True)
    open(queries_path, "w").close()
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    ports = {"dns": dns.getsockname()[1]}
    threading.Thread(target=serve_dns, args=(dns,), daemon=True).start()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    # One port number for each service on every address: a name resolves to
    # its address, and the test connects to NAME:PORT.
    for kind in ("http", "https", "echo"):
        while True:
            port = free_port()
            try:
                servers = []
                for a in addresses:
                    if kind == "echo":
                        servers.append(Echo((a, port), EchoHandler))
                    else:
                        s = Threaded((a, port), Handler)
                        if kind == "https":
                            s.socket = ctx.wrap_socket(s.socket, server_side=True)
                        servers.append(s)
                break
            except OSError:
                for s in servers:
                    s.server_close()
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        ports[kind] = port
    # The web ports themselves, where the relay checks SNI and Host: only
    # where this process may bind them (root) and nobody else has.
    for kind, port in (("https", 443), ("http", 80)):
        try:
            servers = []
            for a in addresses:
                s = Threaded((a, port), Handler)
                if kind == "https":
                    s.socket = ctx.wrap_socket(s.socket, server_side=True)
                servers.append(s)
        except OSError:
            for s in servers:
                s.server_close()
            continue
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        ports[kind + "_web"] = port
    with open(os.path.join(out_dir, "ports.tmp"), "w") as f:
        json.dump(ports, f)
    os.rename(os.path.join(out_dir, "ports.tmp"), os.path.join(out_dir, "ports"))
    sys.stdin.read()


main()
