#!/usr/bin/env python3
"""Smoke test of tpa-sim (plain HTTP, OAuth2, faults, registry, TLS-PSK) and delay-proxy."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SIM = sys.argv[1]
PROXY = sys.argv[2]
API = "/maker/latest/api/factoryDevices"
failures = 0
checks = 0


def check(cond, what):
    """Record one check; print it when it fails."""
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def wait_port(path, proc, timeout=5.0):
    """Wait for a port file written by proc and return the port."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return int(open(path).read())
        if proc.poll() is not None:
            raise RuntimeError("process exited early: %d" % proc.returncode)
        time.sleep(0.01)
    raise RuntimeError("no port file " + path)


class Sim:
    """A running tpa-sim with its API and control ports."""

    def __init__(self, tmp, *extra, plain=True):
        self.tmp = tmp
        for f in ("api.port", "ctl.port"):
            if os.path.exists(os.path.join(tmp, f)):
                os.unlink(os.path.join(tmp, f))
        args = [SIM, "--listen", "127.0.0.1:0", "--port-file", os.path.join(tmp, "api.port"),
                "--control", "127.0.0.1:0", "--control-port-file", os.path.join(tmp, "ctl.port"),
                "--seed", "42"]
        if plain:
            args.append("--plain")
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.port = wait_port(os.path.join(tmp, "api.port"), self.proc)
        self.ctl = wait_port(os.path.join(tmp, "ctl.port"), self.proc)
        self.first_line = self.proc.stdout.readline().strip()

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.out = self.proc.stdout.read()
            self.err = self.proc.stderr.read()
            check("Sanitizer" not in self.err and "runtime error" not in self.err,
                  "sanitizer report: " + self.err[-2000:])
        return self.proc.returncode

    def control(self, method, path, body=None):
        """One request to the control port; returns (status, decoded JSON)."""
        c = http.client.HTTPConnection("127.0.0.1", self.ctl, timeout=5)
        c.request(method, path, body=json.dumps(body) if body is not None else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data)

    def counters(self):
        return self.control("GET", "/counters")[1]

    def faults(self, **kw):
        st, got = self.control("POST", "/faults", kw)
        check(st == 200, "POST /faults %r -> %d" % (kw, st))
        return got


def request(port, method, path, body=None, headers=None, conn=None):
    """One API request; returns (status, headers, decoded body or raw bytes)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = json.dumps(body) if isinstance(body, dict) else body
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    if conn is None:
        c.close()
    try:
        return r.status, r.headers, json.loads(raw)
    except ValueError:
        return r.status, r.headers, raw


def device(eui, **kw):
    d = {"deviceEUI": eui, "joinEUI": "0011223344556677"}
    if not kw:
        d["tkmInfo"] = "3111" + eui
    d.update(kw)
    return d


def raw_exchange(port, data, timeout=3.0):
    """Send bytes on a new connection and read until the server closes; (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    got = b""
    closed = False
    try:
        while True:
            b = s.recv(4096)
            if not b:
                closed = True
                break
            got += b
    except (socket.timeout, ConnectionResetError):
        closed = isinstance(sys.exc_info()[1], ConnectionResetError)
    s.close()
    return got, closed


def post_bytes(dev):
    body = json.dumps(dev).encode()
    return (b"POST " + API.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_plain(tmp):
    sim = Sim(tmp)
    try:
        check(re.fullmatch(r"listening on 127\.0\.0\.1:\d+", sim.first_line), sim.first_line)
        check(sim.first_line.endswith(":%d" % sim.port), "stdout port matches port file")
        st, _, b = request(sim.port, "POST", API, device("0123d345666e2dbd"))
        check(st == 201, "import -> %d" % st)
        check(b.get("ref") == "fd-1", "ref %r" % b)
        tok = b.get("ownerToken", "")
        check(re.fullmatch(r"[0-9a-f]{32}", tok) is not None, "token %r" % tok)
        check(b.get("deviceEUI") == "0123D345666E2DBD", "deviceEUI upper-cased")
        st, _, q = request(sim.port, "GET", API + "?deviceEUI=0123D345666E2DBD")
        check(st == 200 and len(q) == 1 and q[0]["ownerToken"] == tok, "query %r" % q)
        st, _, q = request(sim.port, "GET", API + "?deviceEUI=0123D345666E2DBE")
        check(st == 200 and q == [], "query unknown -> []")
        st, _, q = request(sim.port, "GET", API + "?deviceEUI=XYZ")
        check(st == 400, "query bad EUI -> %d" % st)

        st, _, b = request(sim.port, "POST", API, device("0123D345666E2DBD"))
        check(st == 409 and b.get("code") == "ALREADY_IMPORTED", "duplicate -> %d %r" % (st, b))
        c = sim.counters()
        check(c["imports"] == 1 and c["duplicate_imports"] == 1, "counters %r" % c)
        check(c["queries"] == 3 and c["devices"] == 1 and c["requests"] == 5, "counters %r" % c)

        bad = [device("0123D345666E2DB"), device("0123D345666E2DBG"),
               device("1111111111111111", tkmInfo="31"),
               device("1111111111111111", appKey="00" * 15),
               device("1111111111111111", tkmInfo="3111" + "1" * 16, appKey="00" * 16),
               {"deviceEUI": "1111111111111111", "tkmInfo": "3111" + "1" * 16},
               {"joinEUI": "0011223344556677", "tkmInfo": "3111" + "1" * 16},
               device("1111111111111111", hsmGroupId=5)]
        for d in bad:
            st, _, b = request(sim.port, "POST", API, d)
            check(st == 400 and b.get("code") == "BAD_REQUEST", "bad %r -> %d" % (d, st))
        for body in ("not json", "[1]", '{"deviceEUI":"1","deviceEUI":"2"}'):
            st, _, b = request(sim.port, "POST", API, body)
            check(st == 400, "bad body %r -> %d" % (body, st))
        st, _, b = request(sim.port, "POST", API, device("2222222222222222", appKey="ab" * 16,
                                                         hsmGroupId="g1"))
        check(st == 201 and b.get("ref") == "fd-2", "appKey import -> %d %r" % (st, b))
        check(sim.counters()["imports"] == 2, "bad requests imported nothing")
        st, devs = sim.control("GET", "/devices")
        check(len(devs) == 2 and devs[1].get("appKey") == "AB" * 16 and
              devs[1].get("hsmGroupId") == "g1", "devices %r" % devs)

        st, _, _ = request(sim.port, "GET", "/nope")
        check(st == 404, "unknown path -> %d" % st)
        st, h, _ = request(sim.port, "DELETE", API)
        check(st == 405 and "POST" in (h.get("Allow") or ""), "DELETE -> %d" % st)
        st, _, _ = request(sim.port, "POST", API, "x" * (70 * 1024))
        check(st == 413, "big body -> %d" % st)
        st, _, _ = request(sim.port, "POST", API, "{}", {"Content-Type": "text/plain"})
        check(st == 415, "text/plain -> %d" % st)

        # Keep-alive: three requests, one connection.
        before = sim.counters()["connections"]
        conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
        for _ in range(3):
            st, _, _ = request(sim.port, "GET", API + "?deviceEUI=0123D345666E2DBD", conn=conn)
            check(st == 200, "keep-alive query")
        conn.close()
        check(sim.counters()["connections"] == before + 1, "keep-alive uses one connection")

        # Chunked request body.
        body = json.dumps(device("3333333333333333")).encode()
        req = (b"POST " + API.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + b"%x\r\n" % 5 + body[:5] + b"\r\n" +
               b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
        got, closed = raw_exchange(sim.port, req)
        check(got.startswith(b"HTTP/1.1 201 ") and closed, "chunked import %r" % got[:40])

        test_faults(sim)
    finally:
        rc = sim.stop()
        check(rc == 0, "exit status on SIGTERM %r" % rc)


def test_faults(sim):
    imports = sim.counters()["imports"]
    st, got = sim.control("POST", "/faults", {"rate_5xx": 2})
    check(st == 400, "probability out of range -> %d" % st)
    st, got = sim.control("POST", "/faults", {"no_such": 1})
    check(st == 400, "unknown fault -> %d" % st)

    sim.faults(rate_5xx=1)
    st, _, b = request(sim.port, "POST", API, device("4444444444444444"))
    check(st == 503 and b.get("code") == "UNAVAILABLE", "rate_5xx -> %d" % st)
    sim.faults(rate_5xx=0, rate_429=1, retry_after=7)
    st, h, b = request(sim.port, "POST", API, device("4444444444444444"))
    check(st == 429 and h.get("Retry-After") == "7", "rate_429 -> %d %r" % (st, h.get("Retry-After")))
    sim.faults(rate_429=0)
    c = sim.counters()
    check(c["imports"] == imports and c["errors_injected"] == 2, "no import on 5xx/429 %r" % c)

    # Outcome unknown: the import happens, the answer never comes.
    sim.faults(drop_before_answer=1)
    got, closed = raw_exchange(sim.port, post_bytes(device("5555555555555555")))
    check(got == b"" and closed, "drop_before_answer closes without answer %r" % got)
    sim.faults(drop_before_answer=0)
    st, _, q = request(sim.port, "GET", API + "?deviceEUI=5555555555555555")
    check(st == 200 and len(q) == 1, "dropped answer but device imported %r" % q)
    check(sim.counters()["imports"] == imports + 1, "drop_before_answer counted the import")

    sim.faults(drop_before_import=1)
    got, closed = raw_exchange(sim.port, post_bytes(device("6666666666666666")))
    check(got == b"" and closed, "drop_before_import closes %r" % got)
    sim.faults(drop_before_import=0)
    st, _, q = request(sim.port, "GET", API + "?deviceEUI=6666666666666666")
    check(q == [], "drop_before_import imported nothing")

    sim.faults(malformed=1)
    got, closed = raw_exchange(sim.port, post_bytes(device("6666666666666666")))
    check(got and not got.startswith(b"HTTP/") and closed, "malformed answer %r" % got)
    sim.faults(malformed=0)

    # reset_after 2: the connection is closed after the second answer.
    sim.faults(reset_after=2)
    q = ("GET " + API + "?deviceEUI=5555555555555555 HTTP/1.1\r\n\r\n").encode()
    got, closed = raw_exchange(sim.port, q * 3)
    check(got.count(b"HTTP/1.1 200") == 2 and closed, "reset_after 2: %d answers" %
          got.count(b"HTTP/1.1 200"))
    sim.faults(reset_after=0)

    sim.faults(duplicate="same")
    st, _, b1 = request(sim.port, "POST", API, device("5555555555555555"))
    st2, _, b2 = request(sim.port, "POST", API, device("5555555555555555"))
    check(st == 200 and st2 == 200 and b1["ownerToken"] == b2["ownerToken"], "duplicate same")
    sim.faults(duplicate="new")
    st, _, b3 = request(sim.port, "POST", API, device("5555555555555555"))
    check(st == 200 and b3["ownerToken"] != b2["ownerToken"], "duplicate new")
    st, _, q = request(sim.port, "GET", API + "?deviceEUI=5555555555555555")
    check(q[0]["ownerToken"] == b3["ownerToken"], "new token stored")
    got = sim.faults(duplicate=409)
    check(got["duplicate"] == "409", "duplicate back to 409")
    check(sim.counters()["imports"] == imports + 1, "duplicates never count as imports")

    sim.faults(latency_ms=150)
    t0 = time.monotonic()
    request(sim.port, "GET", API + "?deviceEUI=5555555555555555")
    dt = time.monotonic() - t0
    check(dt >= 0.15, "latency 150 ms took %.3f s" % dt)
    sim.faults(latency_ms=0, slow=True)
    t0 = time.monotonic()
    st, _, q = request(sim.port, "GET", API + "?deviceEUI=5555555555555555")
    dt = time.monotonic() - t0
    check(st == 200 and len(q) == 1 and dt >= 0.02, "slow answer %d in %.3f s" % (st, dt))
    sim.faults(slow=False, idle_close_ms=100)
    s = socket.create_connection(("127.0.0.1", sim.port), timeout=3)
    t0 = time.monotonic()
    check(s.recv(10) == b"" and time.monotonic() - t0 >= 0.09, "idle connection closed")
    s.close()
    sim.faults(idle_close_ms=0, refuse=True)
    got, closed = raw_exchange(sim.port, post_bytes(device("7777777777777777")))
    check(got == b"" and closed, "refuse")
    sim.faults(refuse=False)

    # Many devices on one connection: each is found again, none is confused with another.
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    tokens = {}
    for i in range(300):
        eui = "F%015X" % i
        st, _, b = request(sim.port, "POST", API, device(eui), conn=conn)
        tokens[eui] = b.get("ownerToken")
    for eui in ("F%015X" % 0, "F%015X" % 150, "F%015X" % 299):
        st, _, q = request(sim.port, "GET", API + "?deviceEUI=" + eui, conn=conn)
        check(len(q) == 1 and q[0]["ownerToken"] == tokens[eui], "bulk lookup %s" % eui)
    st, _, b = request(sim.port, "POST", API, device("F%015X" % 7), conn=conn)
    check(st == 409, "bulk duplicate -> %d" % st)
    conn.close()
    check(len(set(tokens.values())) == 300, "300 distinct tokens")

    st, c = sim.control("POST", "/reset-counters")
    check(st == 200 and c["imports"] == 0 and c["requests"] == 0 and c["devices"] > 0,
          "reset-counters %r" % c)
    st, devs = sim.control("DELETE", "/devices")
    check(st == 200 and devs == [] and sim.counters()["devices"] == 0, "DELETE /devices")
    st, _, b = request(sim.port, "POST", API, device("F%015X" % 7))
    check(st == 201, "import after DELETE /devices -> %d" % st)


def test_registry_and_oauth(tmp):
    reg = os.path.join(tmp, "registry.json")
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write("s3cret\n")
    sim = Sim(tmp, "--registry", reg, "--oauth2", "--client-id", "maker", "--client-secret-file",
              secret, "--token-ttl", "1")
    try:
        st, _, b = request(sim.port, "POST", API, device("8888888888888888"))
        check(st == 401 and b.get("code") == "UNAUTHORIZED", "no bearer -> %d" % st)
        form = "grant_type=client_credentials&client_id=maker&client_secret=wrong"
        st, _, b = request(sim.port, "POST", "/oauth/token", form,
                           {"Content-Type": "application/x-www-form-urlencoded"})
        check(st == 401, "wrong secret -> %d" % st)
        form = "grant_type=client_credentials&client_id=maker&client_secret=s3cret"
        st, _, b = request(sim.port, "POST", "/oauth/token", form,
                           {"Content-Type": "application/x-www-form-urlencoded"})
        check(st == 200 and b.get("token_type") == "Bearer" and b.get("expires_in") == 1,
              "token %r" % b)
        auth = {"Authorization": "Bearer " + b.get("access_token", "")}
        st, _, b = request(sim.port, "POST", API, device("8888888888888888"), auth)
        check(st == 201, "import with bearer -> %d" % st)
        st, _, b = request(sim.port, "GET", API + "?deviceEUI=8888888888888888",
                           headers={"Authorization": "Bearer 0123"})
        check(st == 401, "bad bearer -> %d" % st)
        time.sleep(1.1)
        st, _, b = request(sim.port, "GET", API + "?deviceEUI=8888888888888888", headers=auth)
        check(st == 401, "expired bearer -> %d" % st)
    finally:
        check(sim.stop() == 0, "oauth sim exit")
    saved = json.load(open(reg))
    check([d["deviceEUI"] for d in saved["devices"]] == ["8888888888888888"], "registry %r" % saved)
    sim = Sim(tmp, "--registry", reg)
    try:
        st, _, q = request(sim.port, "GET", API + "?deviceEUI=8888888888888888")
        check(len(q) == 1 and q[0]["ownerToken"] == saved["devices"][0]["ownerToken"],
              "registry reloaded %r" % q)
        st, _, b = request(sim.port, "POST", API, device("9999999999999999"))
        check(b.get("ref") == "fd-2", "refs continue after reload %r" % b)
    finally:
        sim.stop()


def test_usage(tmp):
    def run(*args):
        return subprocess.run([SIM] + list(args), capture_output=True, text=True, timeout=10)
    r = run("--bogus")
    check(r.returncode == 2 and "usage" in r.stderr, "bad flag -> %d" % r.returncode)
    r = run("--listen", "127.0.0.1:0")
    check(r.returncode == 2, "TLS without PSK -> %d" % r.returncode)
    r = run("--plain", "--listen", "127.0.0.1:0", "--rate-5xx", "1.5")
    check(r.returncode == 2, "bad probability -> %d" % r.returncode)
    r = run("--plain", "--listen", "localhost")
    check(r.returncode == 2, "bad address -> %d" % r.returncode)
    r = run("--listen", "127.0.0.1:0", "--psk-identity", "a", "--psk-file",
            os.path.join(tmp, "missing"))
    check(r.returncode == 1 and "PSK file" in r.stderr, "missing PSK file -> %d %s" %
          (r.returncode, r.stderr))
    bad = os.path.join(tmp, "badpsk")
    with open(bad, "w") as f:
        f.write("secretnothex")
    r = run("--listen", "127.0.0.1:0", "--psk-identity", "a", "--psk-file", bad)
    check(r.returncode == 1 and "secretnothex" not in r.stderr, "bad PSK -> %d" % r.returncode)


def s_client(port, identity, key, data, sess_in=None, sess_out=None):
    """Run openssl s_client with a PSK; returns its combined output."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2",
            "-psk", key, "-psk_identity", identity, "-ign_eof"]
    if sess_in:
        args += ["-sess_in", sess_in]
    if sess_out:
        args += ["-sess_out", sess_out]
    r = subprocess.run(args, input=data, capture_output=True, timeout=10)
    return (r.stdout + r.stderr).decode(errors="replace")


def test_tls(tmp):
    if not shutil.which("openssl"):
        print("# SKIP TLS part: openssl not installed")
        return
    key = "00112233445566778899aabbccddeeff"
    pskf = os.path.join(tmp, "psk")
    with open(pskf, "w") as f:
        f.write(key + "\n")
    os.chmod(pskf, 0o600)
    sim = Sim(tmp, "--psk-identity", "line-1", "--psk-file", pskf, plain=False)
    try:
        req = post_bytes(device("AAAAAAAAAAAAAAAA"))
        req = req.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
        sess = os.path.join(tmp, "sess")
        out = s_client(sim.port, "line-1", key, req, sess_out=sess)
        check("HTTP/1.1 201 Created" in out, "TLS import: %s" % out[-300:])
        q = ("GET " + API + "?deviceEUI=AAAAAAAAAAAAAAAA HTTP/1.1\r\nConnection: close\r\n\r\n")
        out = s_client(sim.port, "line-1", key, q.encode(), sess_in=sess)
        check("Reused" in out and "AAAAAAAAAAAAAAAA" in out, "TLS resumed query: %s" % out[-300:])
        out = s_client(sim.port, "line-2", key, q.encode())
        check("HTTP/1.1" not in out, "wrong identity refused")
        out = s_client(sim.port, "line-1", "ff" * 16, q.encode())
        check("HTTP/1.1" not in out, "wrong key refused")
        c = sim.counters()
        check(c["handshakes"] == 2 and c["resumed"] == 1 and c["imports"] == 1 and
              c["connections"] == 4, "TLS counters %r" % c)
    finally:
        sim.stop()
    check(key not in sim.out + sim.err, "PSK never printed")


def test_delay_proxy(tmp):
    sim = Sim(tmp)
    pf = os.path.join(tmp, "proxy.port")
    proxy = subprocess.Popen([PROXY, "--listen", "127.0.0.1:0", "--port-file", pf, "--to",
                              "127.0.0.1:%d" % sim.port, "--delay-ms", "50"],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = wait_port(pf, proxy)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        st, _, b = request(port, "POST", API, device("BBBBBBBBBBBBBBBB"), conn=conn)
        check(st == 201, "import through the proxy -> %d" % st)
        t0 = time.monotonic()
        st, _, q = request(port, "GET", API + "?deviceEUI=BBBBBBBBBBBBBBBB", conn=conn)
        dt = time.monotonic() - t0
        check(st == 200 and len(q) == 1, "query through the proxy")
        check(0.1 <= dt < 1.0, "round trip %.3f s, want >= 2 x 50 ms" % dt)
        conn.close()
        # The server's close reaches the client, after the delay.
        q = ("GET " + API + "?deviceEUI=BBBBBBBBBBBBBBBB HTTP/1.1\r\nConnection: close\r\n\r\n")
        t0 = time.monotonic()
        got, closed = raw_exchange(port, q.encode())
        dt = time.monotonic() - t0
        check(got.startswith(b"HTTP/1.1 200") and closed and dt >= 0.1, "close through proxy")
        # A client half-close reaches the server, which then closes too.
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(q.encode()[:-2])
        s.shutdown(socket.SHUT_WR)
        check(s.recv(100) == b"", "half-close forwarded")
        s.close()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            check(proxy.wait(5) == 0, "proxy exit status")
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
            check(False, "proxy did not exit on SIGTERM")
        sim.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="tpasim-")
    try:
        test_usage(tmp)
        test_plain(tmp)
        test_registry_and_oauth(tmp)
        test_tls(tmp)
        test_delay_proxy(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d checks, %d failed" % (checks, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
