#!/usr/bin/env python3
"""A client nobody here wrote the TLS of: python's ssl module against berthd's TLS listener.

usage: py-client.py PORT PKI_DIR CERT_NAME DOMAIN_XML
With a good certificate: ping, subscribe, define a domain, print the event, undefine it.
With a refused one: print 'refused: ' and python's own error (which names the TLS alert).
"""
import json
import socket
import ssl
import sys

port, pki, name, xml = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_verify_locations(f"{pki}/ca-cert.pem")
ctx.load_cert_chain(f"{pki}/{name}-cert.pem", f"{pki}/{name}-key.pem")


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.next_id = 1
        self.notes = []

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("berthd closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params=None):
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            req["params"] = params
        self.next_id += 1
        self.sock.sendall((json.dumps(req) + "\n").encode())
        while True:
            msg = self.line()
            if "id" not in msg:
                self.notes.append(msg)
                continue
            if "error" in msg:
                raise RuntimeError(msg["error"]["message"])
            return msg["result"]

    def notification(self):
        if self.notes:
            return self.notes.pop(0)
        while True:
            msg = self.line()
            if "id" not in msg:
                return msg


try:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    c = Conn(sock)
    print(c.call("agent.ping"))
except (ssl.SSLError, ConnectionError, OSError) as e:
    print(f"refused: {e!r}")
    sys.exit(0 if name != "admin" else 1)

if name != "admin":
    print("not refused")
    sys.exit(1)
c.call("events.subscribe", {"filter": {"type": "domain-defined"}})
c.call("domain.define", {"xml": xml})
note = c.notification()
ev = note["params"]
obj = ev.get("event", ev)
print("event", obj["type"], obj["object"]["name"])
c.call("domain.undefine", {"name": obj["object"]["name"]})
sock.close()
