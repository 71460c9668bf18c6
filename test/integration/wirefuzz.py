"""wirefuzz: outside-in fuzzing of the daemons' connections, through their real sockets.

Where test/fuzz's targets feed one connection of a daemon built into the fuzzer, this drives
the real tpad and tpas processes as their clients do, many connections at once: random
sequences of valid and broken varlink frames (every method of every interface served, each
with random flags among more, oneway and upgrade, parameters valid, random or of the wrong
type), pipelined, cut into random writes, partial frames, a half-close at a random point,
clients that go away mid-reply (some with a reset), clients that read slowly while a stream
pauses and goes on, and HTTP requests to /metrics and tpas's tunnel (pipelined, chunked,
"Expect: 100-continue", oversized, malformed, half-closed, cut off).

What each conversation must see: every varlink message is a JSON object with parameters or
an error; a call's replies come in call order (a last call of the batch is answered last,
and only after every call before it); no more calls are answered than were sent, and every
call that must be answered is (when nothing before it may stay open); a stream's uplinks
come in seq order with none skipped or repeated, however slowly its client reads; every
HTTP answer is a status line with a Content-Length, as many as the requests allow. After
each batch the daemon is alive, a new client gets a correct answer, and its log has no
sanitizer report; at the end, with every client gone, no call stays in flight, no output
owed, no connection or stream open.

The seed names the whole run (the conversations, not the threads' interleaving). The
timed suite runs a few fixed seeds (test_wirefuzz.py); a longer run, on a sanitizer build:

    WIREFUZZ_SEED=7 WIREFUZZ_BATCHES=200 meson test -C build-asan test_wirefuzz -t 20
"""

import json
import os
import random
import select
import socket
import struct
import threading
import time


SERVICE = "org.varlink.service"
FLAG_SETS = [(), ("more",), ("oneway",), ("upgrade",), ("more", "oneway"),
             ("more", "upgrade"), ("oneway", "upgrade"), ("more", "oneway", "upgrade")]


class Violation(AssertionError):
    """A broken promise: the message says which and where (seed, batch, conversation)."""


def rst_close(sock):
    """Close with a reset (SO_LINGER 0), as a client killed while tpad writes to it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def send_cut(sock, data, rng, slow=False):
    """data in writes of random sizes (a byte to all of it); False if the daemon closed."""
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 2, 7, 64, 511, 4096, len(data)])
        try:
            sock.sendall(data[pos:pos + n])
        except OSError:
            return False
        pos += n
        if slow and rng.random() < 0.3:
            time.sleep(rng.random() * 0.02)
    return True


def recv_until(sock, buf, done, seconds, pace=0.0, size=65536, slow_for=1.0):
    """Read into buf (a bytearray) until done(buf) or EOF or seconds pass: for the first
    slow_for seconds size bytes at a time, pace seconds between reads (a slow reader), then
    at full speed. Returns "done", "eof" or "time"."""
    start = time.monotonic()
    deadline = start + seconds
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            return "time"
        r, _, _ = select.select([sock], [], [], min(left, 0.2))
        if not r:
            continue
        slow = time.monotonic() - start < slow_for
        try:
            chunk = sock.recv(size if slow else 65536)
        except (ConnectionResetError, BrokenPipeError):
            return "eof"
        if not chunk:
            return "eof"
        buf += chunk
        if pace and slow:
            time.sleep(pace)
    return "done"


def split_messages(buf):
    """The complete varlink messages in buf (NUL-terminated), decoded; raises Violation for
    one that is not a JSON object with parameters or an error."""
    out = []
    for raw in bytes(buf).split(b"\0")[:-1]:
        try:
            m = json.loads(raw)
        except ValueError:
            raise Violation(f"a reply that is not JSON: {raw[:200]!r}")
        if not isinstance(m, dict) or not ("parameters" in m or "error" in m):
            raise Violation(f"a reply without parameters or error: {raw[:200]!r}")
        if "error" in m and not isinstance(m["error"], str):
            raise Violation(f"an error that is not a name: {raw[:200]!r}")
        if not isinstance(m.get("parameters", {}), dict):
            raise Violation(f"parameters that are not an object: {raw[:200]!r}")
        out.append(m)
    return out


class Values:
    """Random values for an interface's types: mostly what it declares, sometimes not."""

    def __init__(self, rng, iface, safe_path):
        self.rng = rng
        self.iface = iface
        self.safe_path = safe_path  # a path a random Backup may write to

    def junk(self, depth=0):
        r = self.rng
        pick = r.randrange(9 if depth < 3 else 6)
        return [lambda: None, lambda: True, lambda: r.randint(-2**63, 2**64),
                lambda: r.random() * 1e30, lambda: "",
                lambda: "é\u2028\U0001F600" * r.randint(0, 3),
                lambda: "A" * r.choice([1, 17, 1000]), lambda: [self.junk(depth + 1)],
                lambda: {"x": self.junk(depth + 1)}][pick]()

    def string(self, name):
        r = self.rng
        if name == "path":
            return self.safe_path()
        hexes = "0123456789ABCDEF"
        return r.choice(["", "0024AEB3C02BE1C4", "".join(r.choice(hexes) for _ in range(16)),
                         "FFFFFFFFFFFFFFFF", "31110123D345666E2DBD", "zz", "é" * 3,
                         "".join(r.choice(hexes) for _ in range(r.choice([2, 32, 64]))),
                         "x" * r.choice([0, 255, 4000]), "csv", "svg", "text", "png",
                         "io.tpad.AS", SERVICE, "io.tpad.Admin"])

    def value(self, typ, name="", depth=0):
        r = self.rng
        if r.random() < 0.04:
            return self.junk(depth)
        kind, arg = typ
        if kind == "maybe":
            return None if r.random() < 0.3 else self.value(arg, name, depth)
        if kind == "array":
            return [self.value(arg, name, depth + 1) for _ in range(r.choice([0, 1, 2, 5]))]
        if kind == "map":
            return {f"k{i}": self.value(arg, name, depth + 1) for i in range(r.randrange(3))}
        if kind == "enum":
            return r.choice(arg + ["BOGUS"]) if r.random() < 0.9 else r.choice(arg)
        if kind == "struct":
            return self.struct(arg, depth)
        if arg == "string":
            return self.string(name)
        if arg == "bool":
            return r.random() < 0.5
        if arg == "int":
            return r.choice([0, 1, -1, 2, 63, 223, 224, 2**31, 2**53, -2**63, r.randrange(10**6)])
        if arg == "float":
            return r.choice([0.0, -1.5, 1e308, r.random()])
        if arg == "object":
            return {"a": self.junk(depth + 1)}
        if arg in self.iface.types and depth < 6:
            return self.value(self.iface.types[arg], name, depth + 1)
        return None

    def struct(self, fields, depth=0):
        out = {}
        for n, t in fields.items():
            if self.rng.random() < 0.85 or t[0] != "maybe":
                out[n] = self.value(t, n, depth + 1)
        if self.rng.random() < 0.1:
            out["unknownField"] = self.junk(depth)
        return out


class VarlinkFuzz:
    """Conversations with one daemon's varlink sockets.

    valid(method) gives valid parameters (or None); open_ended(frame) says whether a call
    may stay open for as long as the client stays (a following stream), so that nothing
    after it on the connection is owed an answer in time."""

    def __init__(self, rng, sockets, ifaces, valid, open_ended, safe_path, max_message):
        self.rng = rng
        self.sockets = sockets  # path -> the interfaces it serves
        self.ifaces = ifaces
        self.valid = valid
        self.open_ended = open_ended
        self.safe_path = safe_path
        self.max_message = max_message
        self.stats = {"conversations": 0, "frames": 0, "replies": 0}

    def call(self, path):
        """(frame bytes, must it be answered: True, False (oneway) or None (either))."""
        r = self.rng
        names = self.sockets[path]
        iname = r.choice(names + ["io.tpad.Nope"] if r.random() < 0.05 else names)
        iface = self.ifaces.get(iname) or self.ifaces[SERVICE]
        member = r.choice(sorted(iface.methods))
        method = f"{iname}.{member}" if r.random() > 0.03 else f"{iname}.Nope"
        vals = Values(r, iface, self.safe_path)
        params = self.valid(method) if r.random() < 0.6 else None
        if params is None:
            params = vals.value(iface.methods[member][0]) if member in iface.methods else {}
        msg = {"method": method, "parameters": params}
        flags = r.choice(FLAG_SETS) if r.random() < 0.7 else ()
        odd = False
        for f in flags:
            msg[f] = True if r.random() < 0.97 else r.choice([False, 1, "yes", None])
            odd = odd or msg[f] is not True
        if r.random() < 0.05:
            del msg["parameters"]
        if r.random() < 0.03:
            msg["parameters"] = r.choice([[], "x", 3, None])
        data = json.dumps(msg, ensure_ascii=r.random() < 0.5).encode()
        if "Backup" in method:
            return data + b"\0", None  # its path is never mutated (the daemon writes there)
        oneway = msg.get("oneway") is True
        if odd or r.random() < 0.15:
            return (self.mutate(data) if not odd else data) + b"\0", None
        return data + b"\0", not oneway

    def mutate(self, data):
        r = self.rng
        data = bytearray(data)
        for _ in range(r.randint(1, 4)):
            op = r.randrange(8)
            i = r.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(i, len(data) - 1)] ^= 1 << r.randrange(8)
            elif op == 1:
                data[i:i] = r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\u0000", b"\\ud800",
                                      b"{", b"]", b'"', b",", b"\x01"])
            elif op == 2:
                del data[i:i + r.randint(1, 20)]
            elif op == 3:
                data = data[:i]
            elif op == 4:
                data[i:i] = b"[" * 300 + b"]" * 300
            elif op == 5:
                data = bytearray(b'{"method":"' + data.replace(b'"', b"") + b'"}')
            elif op == 6:
                data[i:i] = b'"more":true,"oneway":true,'
            else:
                data = bytearray(r.choice([b"", b"null", b"[]", b"{}", b"1e999999",
                                           b'{"method":""}', b'{"method":1}',
                                           b'{"method":"a.b","oneway":true,"upgrade":true}']))
        return bytes(data.replace(b"\0", b" "))

    def connect(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        return s

    def conversation(self, tag):
        """One client: a batch of frames, then one of the ways a client ends."""
        r = self.rng
        path = r.choice(sorted(self.sockets))
        kind = r.choices(["pipeline", "vanish", "partial", "big"], [70, 15, 10, 5])[0]
        frames = [self.call(path) for _ in range(r.choice([1, 2, 3, 8, 20]))]
        # Answered with an error naming it: the last answer of the batch, recognized.
        self.nonce = getattr(self, "nonce", 0) + 1
        mark = f"end.of.batch{self.nonce}"
        sentinel = {"method": f"{SERVICE}.GetInterfaceDescription",
                    "parameters": {"interface": mark}}
        if kind == "pipeline":
            frames.append((json.dumps(sentinel).encode() + b"\0", True))
        data = b"".join(f for f, _ in frames)
        if kind == "partial":
            data += json.dumps(sentinel).encode()[:r.randrange(1, 40)]
        if kind == "big":
            data += b'{"method":"' + b"a" * (self.max_message + 10) + b'"}\0'
        self.stats["conversations"] += 1
        self.stats["frames"] += len(frames)
        s = self.connect(path)
        t0 = time.monotonic()
        try:
            self._converse(s, kind, frames, data, tag, mark)
        except Violation as e:
            raise Violation(f"{e}\n  sent: {data[:3000]!r}")
        finally:
            s.close()
            if os.environ.get("WIREFUZZ_VERBOSE") and time.monotonic() - t0 > 2:
                print(f"{tag} {kind}: {time.monotonic() - t0:.1f} s: {data[:300]!r}")

    def _converse(self, s, kind, frames, data, tag, mark):
        r = self.rng
        end = r.choices(["halfclose", "read", "close", "rst"], [40, 30, 15, 15])[0]
        if kind == "vanish" or end in ("close", "rst"):
            send_cut(s, data, r)
            if r.random() < 0.5:  # a reply half read
                part = r.randrange(1, 300)
                recv_until(s, bytearray(), lambda b: len(b) > part, 0.2)
            (rst_close if end == "rst" else socket.socket.close)(s)
            return
        sent = send_cut(s, data, r, slow=r.random() < 0.2)
        if end == "halfclose":
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        buf = bytearray()
        owed = sum(1 for _, a in frames if a)
        maybe = sum(1 for _, a in frames if a is None)
        ended = [m for m in frames if m[1] is not False]
        open_ended = any(self.open_ended(f) for f, _ in frames)
        pace = 0.01 if r.random() < 0.1 else 0.0
        size = r.choice([1, 7, 4096, 65536]) if pace else 65536

        def finals(b):
            return sum(1 for m in split_messages(b) if not m.get("continues"))
        if kind == "pipeline":
            want = owed + maybe
            got = recv_until(s, buf, lambda b: finals(b) >= want or
                             (b.endswith(b"\0") and mark.encode() in b.rsplit(b"\0", 2)[-2]),
                             3 if open_ended else 20, pace, size)
        else:
            got = recv_until(s, buf, lambda b: False, 5 if end == "halfclose" else 0.3,
                             pace, size)
        msgs = split_messages(buf)
        self.stats["replies"] += len(msgs)
        n = sum(1 for m in msgs if not m.get("continues"))
        where = f"{tag} {kind}/{end} on {os.path.basename(s.getpeername() or '?')}"
        if n > len(ended):
            raise Violation(f"{where}: {n} calls answered, {len(frames)} sent "
                            f"({len(ended)} not oneway)")
        if kind == "big":
            # (Unless a stream before it owes the client so much that it is not read.)
            if got == "time" and end == "halfclose" and not open_ended:
                raise Violation(f"{where}: a message over limits.max-message left open")
            return
        if kind == "partial" and end == "halfclose" and not open_ended and got != "eof":
            raise Violation(f"{where}: a half-closed client with a partial message left open")
        if kind != "pipeline" or not sent or open_ended:
            return
        if got == "time":
            raise Violation(f"{where}: {n} of {owed} to {owed + maybe} answers in 20 s: "
                            f"{bytes(buf)[-300:]!r}")
        if got == "eof" and n < owed:
            raise Violation(f"{where}: closed after {n} of {owed} answers")
        last = [m for m in msgs if not m.get("continues")][-1]
        if last.get("parameters", {}).get("interface") != mark:
            raise Violation(f"{where}: the last call was not answered last: {last}")
        if n < owed:
            raise Violation(f"{where}: {n} answers, {owed} calls owed one")
        if end == "halfclose":
            # Everything answered: the daemon closes a client that shut its side.
            if recv_until(s, buf, lambda b: False, 5) != "eof":
                raise Violation(f"{where}: a half-closed client left open once answered")


class HttpFuzz:
    """Conversations with an HTTP server: valid(rng) gives one valid request's bytes."""

    def __init__(self, rng, port, valid, max_body):
        self.rng = rng
        self.port = port
        self.valid = valid
        self.max_body = max_body
        self.stats = {"conversations": 0, "requests": 0, "answers": 0}

    def request(self):
        """(request bytes, answered: True, or None if it may end the connection)."""
        r = self.rng
        v = self.valid(r)
        k = r.randrange(14)
        if k < 6:
            return v, True
        head, _, body = v.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if k == 6:  # chunked, in random chunks, maybe with an extension and a trailer
            lines = [ln for ln in lines if not ln.lower().startswith(b"content-length")]
            lines.append(b"Transfer-Encoding: chunked")
            out, pos = b"", 0
            while pos < len(body):
                n = r.randint(1, 40)
                ext = b";x=y" if r.random() < 0.2 else b""
                out += b"%x%s\r\n%s\r\n" % (len(body[pos:pos + n]), ext, body[pos:pos + n])
                pos += n
            out += b"0\r\n" + (b"X-T: 1\r\n" if r.random() < 0.3 else b"") + b"\r\n"
            return b"\r\n".join(lines) + b"\r\n\r\n" + out, True
        if k == 7:  # Expect: 100-continue, the body sent anyway
            return b"\r\n".join(lines + [b"Expect: 100-continue"]) + b"\r\n\r\n" + body, True
        if k == 8:  # HTTP/1.0, kept alive or not
            lines[0] = lines[0].replace(b"HTTP/1.1", b"HTTP/1.0")
            if r.random() < 0.5:
                lines.append(b"Connection: keep-alive")
            return b"\r\n".join(lines) + b"\r\n\r\n" + body, None
        bad = r.choice([
            b"GET\r\n\r\n", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", b"\x00\xff\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (self.max_body + 1),
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ffffffffffffffffff\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % (self.max_body * 4),
            b"GET http://x:1/metrics?a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ])
        if r.random() < 0.3:
            bad = bytes(b ^ (1 << r.randrange(8)) if r.random() < 0.02 else b for b in v)
        return bad, None

    def conversation(self, tag):
        r = self.rng
        reqs = [self.request() for _ in range(r.choice([1, 2, 4, 10]))]
        data = b"".join(q for q, _ in reqs)
        if r.random() < 0.1:
            data += self.valid(r)[:r.randrange(1, 30)]  # a request left unfinished
        self.stats["conversations"] += 1
        self.stats["requests"] += len(reqs)
        end = r.choices(["halfclose", "read", "close", "rst"], [45, 25, 15, 15])[0]
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        t0 = time.monotonic()
        try:
            send_cut(s, data, r)
            if end in ("close", "rst"):
                if r.random() < 0.5:
                    recv_until(s, bytearray(), lambda b: len(b) > 20, 0.2)
                (rst_close if end == "rst" else socket.socket.close)(s)
                return
            if end == "halfclose":
                s.shutdown(socket.SHUT_WR)
            buf = bytearray()
            sure = all(a for _, a in reqs)
            want = len(reqs)
            # A slow reader, not one so slow that the server's timeout closes it.
            pace = 0.01 if r.random() < 0.1 else 0.0
            got = recv_until(s, buf, lambda b: self.answers(b, tag)[0] >= want and sure,
                             10 if end == "halfclose" else 3 if sure else 1, pace,
                             r.choice([4096, 65536]) if pace else 65536)
            n, closed = self.answers(buf, tag)
            self.stats["answers"] += n
            if n > want:
                raise Violation(f"{tag} http: {n} answers to {want} requests")
            if sure and n < want:
                raise Violation(f"{tag} http/{end}: {n} answers to {want} valid requests "
                                f"({got}): {bytes(buf)[-300:]!r}")
            if end == "halfclose" and got != "eof" and recv_until(
                    s, buf, lambda b: False, 12) != "eof":
                raise Violation(f"{tag} http: a half-closed client left open")
        finally:
            s.close()
            if os.environ.get("WIREFUZZ_VERBOSE") and time.monotonic() - t0 > 2:
                print(f"{tag} {end}: {time.monotonic() - t0:.1f} s: {data[:300]!r}")

    @staticmethod
    def answers(buf, tag):
        """(answers complete in buf, whether one said Connection: close); Violation for
        bytes that are not answers."""
        n, pos, closed = 0, 0, False
        b = bytes(buf)
        while pos < len(b):
            end = b.find(b"\r\n\r\n", pos)
            if end < 0:
                if not b"HTTP/1.1 "[:len(b) - pos] == b[pos:pos + 9][:len(b) - pos]:
                    raise Violation(f"{tag} http: not a status line: {b[pos:pos + 80]!r}")
                break
            head = b[pos:end].decode("latin-1")
            lines = head.split("\r\n")
            if not lines[0].startswith("HTTP/1.1 ") or not lines[0][9:12].isdigit():
                raise Violation(f"{tag} http: not a status line: {lines[0][:80]!r}")
            status = int(lines[0][9:12])
            if status == 100:
                pos = end + 4
                continue
            hdr = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
                   for ln in lines[1:] if ":" in ln}
            if "content-length" not in hdr:
                raise Violation(f"{tag} http: an answer without Content-Length: {head!r}")
            length = int(hdr["content-length"])
            if len(b) < end + 4 + length:
                break  # HEAD answers carry no body: not asked here
            pos = end + 4 + length
            n += 1
            closed = closed or hdr.get("connection", "").lower() == "close"
        return n, closed


class StreamFuzz:
    """io.tpad.AS.Uplinks streams read at random paces, so that tpas pauses them and goes on
    once its client has read (calls pipelined behind a stream wait for it), ended by the
    client in every way. last_seq() is the journal's last seq now."""

    def __init__(self, rng, path, last_seq):
        self.rng = rng
        self.path = path
        self.last_seq = last_seq
        self.stats = {"streams": 0, "uplinks": 0}

    def conversation(self, tag):
        r = self.rng
        top = self.last_seq()
        after = r.choice([0, 0, r.randrange(top + 1), top])
        follow = r.random() < 0.6
        behind = r.choice([0, 0, 1, 3])  # calls sent after the stream: answered after it
        msg = {"method": "io.tpad.AS.Uplinks", "more": True,
               "parameters": {"after": after, "follow": follow}}
        data = json.dumps(msg).encode() + b"\0"
        data += behind * (json.dumps({"method": f"{SERVICE}.GetInfo"}).encode() + b"\0")
        self.stats["streams"] += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path)
        end = r.choices(["rst", "close", "halfclose", "whole"], [25, 25, 25, 25])[0]
        try:
            send_cut(s, data, r)
            if end == "halfclose":
                s.shutdown(socket.SHUT_WR)
            buf = bytearray()
            pace = r.choice([0.0, 0.005, 0.05])
            size = r.choice([512, 4096, 65536])
            whole = not follow and end in ("whole", "halfclose")

            def finished(b):
                return sum(1 for m in split_messages(b) if not m.get("continues")) > behind
            got = recv_until(s, buf, finished if whole else (lambda b: False),
                             30 if whole else r.random() * 1.5, pace, size, slow_for=1.5)
            self.check(split_messages(buf), after, follow, behind, whole, top, tag)
            if whole and got != "done":
                raise Violation(f"{tag} stream: not ended in 30 s ({got}), follow {follow}")
            if end == "rst":
                rst_close(s)
        finally:
            s.close()

    def check(self, msgs, after, follow, behind, whole, top, tag):
        seq = after
        ended = 0
        for m in msgs:
            if "error" in m:
                raise Violation(f"{tag} stream: {m}")
            if ended:
                if m.get("parameters", {}).get("product") != "tpas":
                    raise Violation(f"{tag} stream: {m} after the stream ended")
                ended += 1
                continue
            up = m["parameters"].get("uplink")
            if up is not None:
                if up["seq"] != seq + 1:
                    raise Violation(f"{tag} stream after {after}: seq {up['seq']} after {seq}")
                seq = up["seq"]
                self.stats["uplinks"] += 1
            if not m.get("continues"):
                ended = 1
        if whole and not follow and seq < top:
            raise Violation(f"{tag} stream after {after}: ended at {seq}, the journal had {top}")


def run_batches(fuzzers, seed, batches, per_batch, check, threads=3, log=None):
    """per_batch conversations of the fuzzers (name -> factory(rng)) in each batch, over
    threads clients at once, each with its own generator from seed; check(batch) after each.
    Returns the summed stats."""
    totals = {}
    for b in range(batches):
        errors = []

        def worker(w):
            rng = random.Random(f"{seed}/{b}/{w}")
            made = {name: f(rng) for name, f in fuzzers.items()}
            for i in range(per_batch):
                name = rng.choice(sorted(made))
                try:
                    made[name].conversation(f"seed {seed} batch {b} worker {w} #{i} {name}")
                except Violation as e:
                    errors.append(str(e))
                    return
                except (ConnectionError, socket.timeout):
                    pass  # the daemon refused or dropped us: check() says whether it is well
                except Exception as e:
                    errors.append(f"seed {seed} batch {b} worker {w} #{i} {name}: {e!r}")
                    return
            for f in made.values():
                for k, v in f.stats.items():
                    totals[k] = totals.get(k, 0) + v
        ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        check(b)
        if errors:
            raise Violation("; ".join(errors))
        if log:
            log(f"batch {b}: {totals}")
    return totals
