"""rel_lib.py — helpers shared by the reliability tests (Python 3 stdlib only):
raw HTTP over a socket (for requests http.client refuses to send), the uniform
error shape, SQLite checks and an independent reader of training-state files.

The daemon itself is driven through tests/e2e/e2e_lib.py (imported here and
re-exported), so every test starts the real brewslmd on 127.0.0.1 port 0."""

import json
import os
import socket
import sqlite3
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

from e2e_lib import *  # noqa: E402,F401,F403  (Daemon, check, require, finish, ...)
import e2e_lib  # noqa: E402


class RawResponse:
    def __init__(self, status, headers, body, closed):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body
        self.closed = closed  # the server closed the connection after it

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%s %r>" % (self.status, self.body[:300])


def _read_response(sock, deadline):
    """Reads one HTTP/1.1 response (Content-Length, chunked or to EOF)."""
    buf = b""
    closed = False

    def more():
        nonlocal buf, closed
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no complete response in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            return False
        buf += chunk
        return True

    while b"\r\n\r\n" not in buf:
        if not more():
            if not buf:
                return None  # closed without an answer
            raise ValueError("truncated response head: %r" % buf[:200])
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers.append((k.strip(), v.strip()))
    hmap = {k.lower(): v for k, v in headers}
    buf = rest
    if "content-length" in hmap:
        n = int(hmap["content-length"])
        while len(buf) < n and more():
            pass
        body = buf[:n]
    elif hmap.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                if not more():
                    raise ValueError("truncated chunk")
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                if not more():
                    raise ValueError("truncated chunk")
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        while more():
            pass
        body = buf
    if hmap.get("connection", "").lower() == "close":
        closed = True
    return RawResponse(status, headers, body, closed)


def raw_request(port, data, timeout=10, half_close=False, send_pause=None):
    """Sends data (bytes, or a list of byte chunks) as is and reads one
    response. Returns a RawResponse, or None when the server closed the
    connection without answering. Errors while sending (the server may close
    early) are tolerated as long as a response can be read."""
    chunks = data if isinstance(data, list) else [data]
    deadline = time.time() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            for c in chunks:
                s.sendall(c)
                if send_pause:
                    time.sleep(send_pause)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return _read_response(s, deadline)
        except ConnectionResetError:
            return None


def http_bytes(method, path, headers=None, body=b"", version="HTTP/1.1", host=True,
               content_length=True):
    """A request as bytes; headers is a list of (name, value) (bytes or str)."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode("utf-8")
    out = [b(method) + b" " + b(path) + b" " + b(version)]
    if host:
        out.append(b"Host: 127.0.0.1")
    names = set()
    for k, v in headers or []:
        out.append(b(k) + b": " + b(v))
        names.add(b(k).lower())
    if content_length and body and b"content-length" not in names:
        out.append(b"Content-Length: %d" % len(body))
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n" + b(body)


def error_shape_ok(body):
    """The uniform error: {"error":{"type","message","param","code"}} with
    string type/message and string-or-null param/code; valid UTF-8 JSON."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    e = doc.get("error") if isinstance(doc, dict) else None
    return (isinstance(e, dict) and set(e) == {"type", "message", "param", "code"}
            and isinstance(e["type"], str) and isinstance(e["message"], str)
            and e["message"] != ""
            and (e["param"] is None or isinstance(e["param"], str))
            and (e["code"] is None or isinstance(e["code"], str)))


def db_integrity(path):
    """PRAGMA integrity_check through Python's sqlite3 (read-only open would
    refuse a WAL file without its -shm, so this opens read-write)."""
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def db_query(path, sql, args=()):
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# ---- training-state files (trainer/state.h), read independently ---------------

def state_file_step(path):
    """The step recorded in a "BSLMSTAT" file when it is complete and its
    CRC32 (zlib, over every byte before the trailing u32) matches; else None.
    Layout: magic(8) | u32 version | u32 header_len | header | u64 extra_len |
    extra | u64 n_params | 3 x f32[n] | u32 crc. The header starts with the
    model config (8 x i32, f32 norm_eps, f32 rope_theta), then i32 method,
    i32 step (trainer/state.c header_pack)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 24 or data[:8] != b"BSLMSTAT":
        return None
    crc = struct.unpack_from("<I", data, len(data) - 4)[0]
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        return None
    _version, hl = struct.unpack_from("<II", data, 8)
    header = data[16:16 + hl]
    if len(header) < 48:
        return None
    return struct.unpack_from("<i", header, 44)[0]


def valid_checkpoints(ckpt_dir):
    """{step: path} of the complete, CRC-valid step-N.state files."""
    out = {}
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return out
    for n in names:
        if not (n.startswith("step-") and n.endswith(".state")):
            continue
        p = os.path.join(ckpt_dir, n)
        st = state_file_step(p)
        if st is not None and n == "step-%d.state" % st:
            out[st] = p
    return out
