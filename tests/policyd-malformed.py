# A corpus of malformed requests for hsmca-policyd (tests/policyd.sh):
# every one must get a 4xx (a 501 for an unknown method); where the daemon itself answers (not
# libevent's own 400/413/431/501 pages), a JSON error with "error" and
# "message".  Prints one line per case; exits 1 when any is wrong.
import json
import socket
import ssl
import sys

port, cafile, csrfile, certfile, keyfile, tok = sys.argv[1:7]
csr = open(csrfile).read()
ctx = ssl.create_default_context(cafile=cafile)


def send(raw):
    data = b""
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="ca.example.com") as t:
            try:
                t.sendall(raw)
            except (ssl.SSLError, OSError):
                pass    # closed on us: what was answered is read below
            for _ in range(1000):
                try:
                    b = t.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not b:
                    break
                data += b
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                         if l.lower().startswith(b"content-length:")]
                    if n and len(body) >= n[0]:
                        break
    return data.split(b"\r\n", 1)[0].decode(errors="replace"), \
        data.partition(b"\r\n\r\n")[2]


def post(body, ctype="application/json"):
    if isinstance(body, str):
        body = body.encode()
    return send(b"POST /v1/certificates HTTP/1.1\r\nHost: ca.example.com\r\n"
                b"Authorization: Bearer " + tok.encode() + b"\r\n"
                b"Content-Type: " + ctype.encode() + b"\r\n"
                b"Connection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
                body)


def get(path):
    return send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n")


cases = [
    ("empty body", post("")),
    ("a JSON array", post("[]")),
    ("JSON null", post("null")),
    ("csr a number", post('{"csr": 5, "profile": "svid"}')),
    ("profile a number", post(json.dumps({"csr": csr, "profile": 7}))),
    ("unknown profile", post(json.dumps({"csr": csr, "profile": "root"}))),
    ("negative ttl", post(json.dumps({"csr": csr, "profile": "svid",
                                      "ttl": "-1h"}))),
    ("huge ttl", post(json.dumps({"csr": csr, "profile": "svid",
                                  "ttl": "99999999999d"}))),
    ("ttl without unit", post(json.dumps({"csr": csr, "profile": "svid",
                                          "ttl": "60"}))),
    ("duplicate keys", post('{"csr": "a", "csr": "b", "profile": "svid"}')),
    ("deep nesting", post("[" * 50000 + "]" * 50000)),
    ("invalid UTF-8", post(b'{"csr": "\xff\xfe", "profile": "svid"}')),
    ("NUL in a string", post('{"csr": "a\\u0000b", "profile": "svid"}')),
    ("a certificate for a CSR",
     post(json.dumps({"csr": open(certfile).read(), "profile": "svid"}))),
    ("a private key for a CSR",
     post(json.dumps({"csr": open(keyfile).read(), "profile": "svid"}))),
    ("two CSRs", post(json.dumps({"csr": csr + csr, "profile": "svid"}))),
    ("CSR with trailing garbage",
     post(json.dumps({"csr": csr + "garbage", "profile": "svid"}))),
    ("form content type", post("csr=x", "application/x-www-form-urlencoded")),
    ("bad request line", send(b"GARBAGE\r\n\r\n")),
    ("unknown method", send(b"BREW /v1/certificates HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n")),
    ("PUT", send(b"PUT /v1/certificates HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")),
    ("NUL in the path", get(b"/v1/%00")),
    ("unknown path", get(b"/v2/everything")),
    ("bad serial to revoke", send(b"POST /v1/certificates/00ZZ/revoke "
                                  b"HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
                                  b"\r\nConnection: close\r\n\r\n")),
    ("huge header", send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " +
                         b"a" * 70000 + b"\r\n\r\n")),
]
# Cases where closing the connection without an answer is right too.
closing = {"huge header"}
bad = 0
for name, (line, body) in cases:
    parts = line.split(" ")
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    # RFC 9110 15.6.2: a method the server does not know is a 501.
    ok = 400 <= code < 500 or (code == 0 and name in closing) or \
        (code == 501 and name == "unknown method")
    if ok and body:
        try:
            j = json.loads(body)
            ok = isinstance(j.get("error"), str) and \
                isinstance(j.get("message"), str)
        except ValueError:
            # libevent's own error pages are HTML.
            ok = code in (400, 413, 431, 501)
    print("ok" if ok else "BAD", code, name)
    bad += not ok
sys.exit(1 if bad else 0)
