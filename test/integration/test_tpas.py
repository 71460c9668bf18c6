"""tpas through the real daemon and the simulated LRC: tunnel, keys, journal, streams, downlinks."""

import base64
import datetime
import http.client
import json
import os
import pathlib
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import stat
import struct
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import tpadtest
from tpadtest import (FAILALLOC, Client, VarlinkError, check_whole_under_failures,  # noqa: E402
                      failalloc_failed, failalloc_usable, free_port, read_all, wait_for,
                      write_secret)

sys.path.insert(0, os.path.join(tpadtest.SRC_ROOT, "test", "lrc-sim"))
from lrc_sim import LrcSim, encrypt_astk, lrc_time  # noqa: E402
from test_metrics import (OM_CHECK, PROM_ACCEPT, TEXT_CHECK, Prometheus, http_get,  # noqa: E402
                          parse, run_python)

TPAS = os.environ.get("TPAS", "build/tpas/tpas")
EXAMPLE_APP = os.path.join(tpadtest.SRC_ROOT, "client", "python", "example_app.py")
TPAS_RULES = os.path.join(tpadtest.SRC_ROOT, "conf", "prometheus", "tpas-alerts.yml")
TPACTL = tpadtest.TPACTL
# test/failalloc: fails one allocation of tpas on demand (not built with sanitizers).
TUNNEL_KEY = "bec499c69e9c939e413b663961636c61"
DEV = "0024AEB3C02BE1C4"
DEV2 = "70B3D57ED0001234"


def exchange(port, data):
    """data on a new connection to the tunnel; all that comes back until tpas closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        return read_all(c)


def host_field_answers(port, method, target, headers=b"", body=b""):
    """What the server at port answers to one request sent three ways (RFC 9112 §3.2):
    HTTP/1.1 without Host, HTTP/1.1 with two, HTTP/1.0 without; each on a new connection,
    all that comes back until the server closes it."""
    line = method + b" " + target
    rest = headers + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return [exchange(port, line + b" HTTP/1.1\r\nConnection: close\r\n" + rest),
            exchange(port, line + b" HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n" +
                     rest),
            exchange(port, line + b" HTTP/1.0\r\n" + rest)]


class Tpas:
    """One tpas process on temporary sockets, a temporary store and a tunnel port."""

    def __init__(self, workdir, rsa_key, lrc_url=None, extra="", lrc_ca=None):
        self.workdir = workdir
        self.apps = os.path.join(workdir, "apps.sock")
        self.admin = os.path.join(workdir, "admin.sock")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "tpas.log")
        self.key_file = os.path.join(workdir, "tunnel.key")
        self.store_key_file = os.path.join(workdir, "store.key")
        self.rsa_key = rsa_key
        write_secret(self.key_file, TUNNEL_KEY)
        self.store_key = os.urandom(32).hex()
        write_secret(self.store_key_file, self.store_key)
        self.conf = os.path.join(workdir, "tpas.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[tunnel]
listen = 127.0.0.1:{self.port}
key-file = {self.key_file}
as-id = tpas-test
max-time-deviation = 60s
[apps]
socket = {self.apps}
[admin]
socket = {self.admin}
[store]
path = {workdir}/tpas.db
key-file = {self.store_key_file}
[astk]
rsa-key-file = {rsa_key}
""")
            if lrc_url:
                f.write(f"[lrc]\nurl = {lrc_url}\nrequest-timeout = 5s\n")
                if lrc_ca:
                    f.write(f"ca-file = {lrc_ca}\n")
            f.write(extra)
        self.proc = None
        self.log = None
        self.env = {}  # added to the environment tpas runs in

    def start(self, preexec_fn=None):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TPAS, "--config", self.conf, "--verbose"],
                                     stdout=self.log, stderr=self.log,
                                     env={**os.environ, **self.env}, preexec_fn=preexec_fn)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tpas exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                with Client(self.admin, 1) as c:
                    c.call("io.tpad.AS.Status")
                return True
            except OSError:
                return False
        wait_for(ready, 20, "tpas to listen")
        return self

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tpas did not stop on SIGTERM:\n" + self.log_text())
        self.proc = None
        self.log.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.log.close()

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def tpactl(self, *args, check=None):
        p = subprocess.run([TPACTL, "--socket", self.admin, *args], capture_output=True,
                           text=True, timeout=60)
        if check is not None and p.returncode != check:
            raise AssertionError(f"tpactl {' '.join(args)} exited {p.returncode}, want "
                                 f"{check}:\n{p.stdout}\n{p.stderr}")
        return p

    def status(self):
        with Client(self.admin) as c:
            return c.call("io.tpad.AS.Status")

    def uplinks(self, after=0, sock=None):
        with Client(sock or self.apps) as c:
            out = c.call_more("io.tpad.AS.Uplinks", {"after": after, "follow": False})
        return [r["uplink"] for r in out if "uplink" in r]


class TpasCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix="tpas-keys-")
        cls.rsa_key = os.path.join(cls.keydir, "as-rsa.pem")
        p = subprocess.run([TPACTL, "as", "keygen", "--out", cls.rsa_key], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        cls.public_pem = p.stdout

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tpas-test-")
        self.procs = []
        self.lrcs = []
        self.astks = []

    def tearDown(self):
        for t in self.procs:
            if t.proc:
                t.stop()
        for s in self.lrcs:
            s.stop()
        problems = []
        for t in self.procs:
            log = t.log_text()
            r = tpadtest.sanitizer_report(t.log_path)
            if r:
                problems.append(f"{t.log_path}: {r}")
            low = log.lower()
            for name, secret in [("tunnel key", TUNNEL_KEY), ("store key", t.store_key)] + \
                    [("ASTK", a.hex()) for a in self.astks]:
                if secret.lower() in low:
                    problems.append(f"the {name} appears in {t.log_path}")
        for s in self.lrcs:
            for dev in s.state["devices"].values():
                for t in self.procs:
                    if dev["appskey"].lower() in t.log_text().lower():
                        problems.append("an AppSKey appears in the log")
        if problems or os.environ.get("KEEP_TMP"):
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("; ".join(problems))

    def tpas(self, **kw):
        d = os.path.join(self.tmp, f"tpas{len(self.procs)}")
        os.makedirs(d)
        t = Tpas(d, self.rsa_key, **kw)
        self.procs.append(t)
        return t

    def lrc(self, t, serve=False):
        s = LrcSim(os.path.join(self.tmp, f"lrc{len(self.lrcs)}.json"), TUNNEL_KEY,
                   as_url=t.url if t else None, as_id="tpas-test")
        self.lrcs.append(s)
        if serve:
            s.port = s.start()
        return s

    def served_lrc(self, **tpas_options):
        """An LRC that takes downlinks, and a started tpas posting them to it: (lrc, tpas)."""
        s = self.lrc(None, serve=True)
        t = self.tpas(lrc_url=f"http://127.0.0.1:{s.port}", **tpas_options).start()
        s.as_url = t.url
        return s, t

    def started(self, devs=(DEV,)):
        """A started tpas with an ASTK, and an LRC posting to it that knows devs under that
        ASTK: (tpas, LRC, ASTK)."""
        t = self.tpas().start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        for d in devs:
            s.add_device(d, astk)
        return t, s, astk

    def tunnel_conf(self, t, lines):
        """Add lines to t's [tunnel] section."""
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(conf.replace("[tunnel]\n", "[tunnel]\n" + lines, 1))

    def tunnel_ready(self, lines):
        """A started tpas with lines in its [tunnel] section, and an LRC that knows DEV
        under a fresh ASTK: (tpas, LRC)."""
        t = self.tpas()
        self.tunnel_conf(t, lines)
        t.start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        s.add_device(DEV, astk)
        return t, s

    def refused(self, conf, *wants, absent=()):
        """tpas --check-config and a start on conf both exit 1, saying each of wants and
        none of absent; the start's stderr."""
        for args in (["--check-config"], []):
            with self.subTest(args=args):
                p = subprocess.run([TPAS, "--config", conf, *args], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 1, p.stderr)
                for want in wants:
                    self.assertIn(want, p.stderr)
                for text in absent:
                    self.assertNotIn(text.lower(), p.stderr.lower())
        return p.stderr

    def use_rsa_key(self, t, path):
        """Point t's astk.rsa-key-file at path."""
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(re.sub(r"(?m)^rsa-key-file = .*$", lambda m: f"rsa-key-file = {path}",
                           conf))

    def self_signed(self, stem, cn="127.0.0.1"):
        """A self-signed P-256 certificate and its key (mode 0600) under tmp: (cert, key)."""
        cert = os.path.join(self.tmp, stem + ".pem")
        key = os.path.join(self.tmp, stem + ".key")
        p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            f"/CN={cn}", "-keyout", key, "-out", cert],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.skipTest("openssl cannot make a certificate: " + p.stderr)
        os.chmod(key, 0o600)
        return cert, key

    def receiver(self, answer, headers=None):
        """An HTTP server on a free port calling answer(body) -> (status, reply body) for
        each POST (its headers appended to the list headers, when given); stopped when the
        test ends. Its URL."""
        import http.server
        import socketserver

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                if headers is not None:
                    headers.append(dict(self.headers))
                status, reply = answer(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
        server = type("S", (socketserver.ThreadingMixIn, http.server.HTTPServer),
                      {"daemon_threads": True})(("127.0.0.1", 0), H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def downlink_ready(self, extra=""):
        """A tpas with a served LRC and DEV known to it by one uplink: (tpas, LRC)."""
        s, t = self.served_lrc(extra=extra)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        return t, s

    def import_astk(self, t, **kw):
        astk = os.urandom(16)
        self.astks.append(astk)
        args = ["as", "import-astk", encrypt_astk(self.public_pem, astk)]
        for k, v in kw.items():
            args += ["--" + k.replace("_", "-"), v]
        p = t.tpactl(*args, check=0)
        self.assertRegex(p.stdout, r"ASTK stored as id \d+")
        return astk

    def show_lrc_clock(self, s, dev="70B3D5FFFFFF0001"):
        """A signed request of the LRC, refused (a device tpas has no key for) after its
        Token and Time were checked: it shows tpas the LRC's clock, which the journal's
        retention waits for after a start. Nothing is journaled."""
        s.add_device(dev, os.urandom(16))
        self.assertEqual(s.uplink(dev, b"clock", with_key=False)[0], 404)

    def prune(self, t, s, through, removed):
        """Restart t with store.retention-days = 1 and its uplinks up to seq through made 3
        days old, and wait for the prune to remove them (removed of them)."""
        t.stop()
        subprocess.run(["sqlite3", os.path.join(t.workdir, "tpas.db"),
                        "UPDATE uplink SET received_ms = received_ms - 3 * 86400000 "
                        f"WHERE seq <= {through}"], check=True)
        with open(t.conf, "r+") as f:
            if "retention-days = 1\n" not in f.read():
                f.write("[store]\nretention-days = 1\n")
        t.start()
        self.show_lrc_clock(s)
        wait_for(lambda: f"{removed} uplinks older than 1 days removed" in t.log_text(), 10,
                 "the prune")


class Tunnel(TpasCase):
    def test_json_and_xml_uplinks_decrypted_in_order(self):
        t, s, _ = self.started()
        self.assertEqual(s.uplink(DEV, b"32.5C/90.5F"), (200, {"seq": 1, "duplicate": False}))
        self.assertEqual(s.uplink(DEV, b"29.9C/85.8F", fmt="xml"),
                         (200, {"seq": 2, "duplicate": False}))
        ups = t.uplinks()
        self.assertEqual([bytes.fromhex(u["payload"]) for u in ups],
                         [b"32.5C/90.5F", b"29.9C/85.8F"])
        self.assertEqual([u["fCntUp"] for u in ups], [0, 1])
        self.assertEqual(ups[0]["devEUI"], DEV)
        self.assertEqual(ups[0]["customerID"], "100122002")
        self.assertEqual(ups[0]["fPort"], 1)
        self.assertFalse(ups[0]["encrypted"])
        self.assertEqual(ups[0]["radio"]["LrrRSSI"], -41.5)
        self.assertEqual(ups[1]["radio"]["SpFact"], "7")  # XML: text as sent
        # The next uplink has no AppSKey field: the stored key decrypts it.
        self.assertEqual(s.uplink(DEV, b"no key field", with_key=False)[0], 200)
        self.assertEqual(bytes.fromhex(t.uplinks(after=2)[0]["payload"]), b"no key field")

    def test_every_field_not_read_reaches_the_stream_and_the_webhook(self):
        """JSON metadata passes as sent; XML's nested elements become objects and arrays of
        strings; nothing tpas reads (the AppSKey above all) is in radio."""
        posted = []

        def answer(body):
            posted.extend(json.loads(body)["uplinks"])
            return 200, b""
        url = self.receiver(answer)
        t = self.tpas(extra=f"[webhook]\nurl = {url}/hook\n").start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        extra = {"Frequency": 868.1, "Late": 0, "ModelCfg": "0", "DevLrrCnt": 2,
                 "Lrrs": {"Lrr": [{"Lrrid": "FF0109A4", "Chain": 0, "LrrRSSI": -41.5},
                                  {"Lrrid": "29000071", "Chain": 1, "LrrRSSI": -90}]},
                 "CustomerData": {"alr": {"pro": "LORA/Generic", "ver": "1"}},
                 "BaseStationData": {"name": "gw1", "doms": []}}
        self.assertEqual(s.uplink(DEV, b"j", extra=extra)[0], 200)
        self.assertEqual(s.uplink(DEV, b"x", fmt="xml", extra=extra)[0], 200)
        want_json = {**extra, "mic_hex": "00000000", "LrrRSSI": -41.5, "LrrSNR": 9.25,
                     "SpFact": 7, "Lrrid": "FF0109A4"}

        def strings(v):
            if isinstance(v, dict):
                return {k: strings(iv) for k, iv in v.items() if iv != []}
            if isinstance(v, list):
                return [strings(iv) for iv in v]
            return str(v)
        want_xml = strings(want_json)
        ups = t.uplinks()
        self.assertEqual(ups[0]["radio"], want_json)
        self.assertEqual(ups[1]["radio"], want_xml)
        wait_for(lambda: len(posted) == 2, 20, "2 uplinks at the webhook")
        self.assertEqual([u["radio"] for u in posted], [want_json, want_xml])

    def test_radio_values_too_deep_are_refused_and_huge_numbers_kept_as_text(self):
        """A radio field nested deeper than 32 levels is answered 400 naming it (a stream
        carrying it could pass what JSON readers take and stop there); 32 levels pass.
        Numbers no integer or double holds are kept as their text, not a 400 that the LRC
        would retry for ever; in a field tpas reads they are refused by its range."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))

        def post(value, field=b"Zz"):
            target, body, ctype = s.build_uplink(DEV, b"v", extra={"Zz": 0})
            if field != b"Zz":
                body = body.replace(b'"' + field + b'": ', b'"' + field + b'": %s, "x": ' % value)
            else:
                body = body.replace(b'"Zz": 0', b'"Zz": ' + value)
            st, ans = s.post(target, body, ctype)
            if st == 200:
                s.state["devices"][DEV]["fcnt_up"] += 1
            return st, ans
        st, ans = post(b"[" * 2046 + b"]" * 2046)
        self.assertEqual(st, 400)
        self.assertEqual(ans["error"], "radio field 'Zz' is nested deeper than 32 levels")
        self.assertEqual(post(b'{"a":' * 33 + b"1" + b"}" * 33)[0], 400)
        self.assertEqual(post(b"[" * 32 + b"]" * 32)[0], 200)
        self.assertEqual(post(b"12345678901234567890")[0], 200)
        self.assertEqual(post(b'[1e400, -1e400, 2, 123456789012345678901234567890]')[0], 200)
        st, ans = post(b"12345678901234567890", field=b"FCntUp")
        self.assertEqual((st, ans["error"]), (400, "FCntUp must be a 32-bit counter"))
        self.assertIn("nested deeper than 32 levels", t.log_text())
        want = [json.loads("[" * 32 + "]" * 32), "12345678901234567890",
                ["1e400", "-1e400", 2, "123456789012345678901234567890"]]
        self.assertEqual([u["radio"]["Zz"] for u in t.uplinks()], want)
        p = t.tpactl("--json", "as", "uplinks", "--after", "0", check=0)
        self.assertIn('"12345678901234567890"', p.stdout)

    def test_radio_strings_jansson_refuses_are_mended_not_refused(self):
        """A radio string holding \\u0000 or a lone UTF-16 surrogate (valid JSON that
        jansson refuses) costs nothing but that character, written U+FFFD; the same in a
        field tpas reads is refused as that field, never read as a shorter value."""
        t, s, _ = self.started()
        st, _ = s.uplink(DEV, b"n", extra={"CustomerData": {"name": "a\x00b", "x": "\ud800"}})
        self.assertEqual(st, 200)
        self.assertEqual(s.uplink(DEV, b"s", extra={"Lrrid": "\udc00\U0001f600"})[0], 200)
        radios = [u["radio"] for u in t.uplinks()]
        self.assertEqual(radios[0]["CustomerData"], {"name": "a\ufffdb", "x": "\ufffd"})
        self.assertEqual(radios[1]["Lrrid"], "\ufffd\U0001f600")
        p = t.tpactl("--json", "as", "uplinks", check=0)
        self.assertIn('"a\ufffdb"', p.stdout)
        target, body, ctype = s.build_uplink(DEV, b"d")
        body = body.replace(DEV.encode() + b'"', DEV.encode() + b'\\u0000junk"', 1)
        self.assertEqual(s.post(target, body, ctype),
                         (400, {"error": "DevEUI must be 16 hexadecimal digits"}))

    def test_radio_numbers_are_written_alike_on_every_path(self):
        """A real in radio is written with 15 significant digits wherever it goes: the
        live stream, the journal read back (a stream with follow false, after a restart),
        the webhook and tpactl --json all write 868.1, never 868.10000000000002."""
        bodies = []

        def answer(body):
            bodies.append(body)
            return 200, b""
        url = self.receiver(answer)
        t = self.tpas(extra=f"[webhook]\nurl = {url}/hook\n").start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        want = b'"Lrrid":"FF0109A4","Frequency":868.1,"LrrLAT":48.8765432101234,"Big":1e300}'

        def raw_stream(params):
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(10)
                c.connect(t.apps)
                c.sendall(json.dumps({"method": "io.tpad.AS.Uplinks", "parameters": params,
                                     "more": True}).encode() + b"\0")
                data = b""
                while b"\0" not in data:
                    data += c.recv(65536)
                return data
        live = threading.Thread(target=lambda: bodies.append(raw_stream({"after": 0})))
        live.start()
        wait_for(lambda: t.status()["subscribers"] == 1, 10, "the follower")
        self.assertEqual(s.uplink(DEV, b"f", extra={"Frequency": 868.1,
                                                     "LrrLAT": 48.8765432101234,
                                                     "Big": 1e300})[0], 200)
        live.join(10)
        wait_for(lambda: len(bodies) == 2, 20, "the webhook and the live stream")
        t.stop()
        t.start()
        bodies.append(raw_stream({"after": 0, "follow": False}))
        bodies.append(t.tpactl("--json", "as", "uplinks", check=0).stdout.encode())
        self.assertEqual(len(bodies), 4)
        for b in bodies:
            self.assertIn(want, b)

    def test_refusals_are_answered_counted_and_never_delivered(self):
        t, s, astk = self.started()
        # A wrong tunnel key: 401.
        st, ans = s.uplink(DEV, b"x", key="0" * 32)
        self.assertEqual((st, ans), (401, {"error": "bad Token"}))
        # A stale Time (the Token is right): 401 naming the reason.
        st, ans = s.uplink(DEV, b"x", time="2019-04-29T18:21:17.290+02:00")
        self.assertEqual(st, 401)
        self.assertIn("stale Time: 2019-04-29T16:21:17.290+00:00 is ", ans["error"])
        self.assertIn("days behind this host's wall clock (", ans["error"])
        self.assertIn("tunnel.max-time-deviation (60 s)", ans["error"])
        # One ahead of our clock (the LRC's clock, or ours, is wrong): said so, not "stale".
        ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=3)
        st, ans = s.uplink(DEV, b"x", time=ahead.isoformat(timespec="milliseconds"))
        self.assertEqual(st, 401)
        self.assertIn(" is 3 h ahead of this host's wall clock (", ans["error"])
        self.assertIn("check the clocks (NTP)", t.log_text())
        # No Token at all.
        target, body, ctype = s.build_uplink(DEV, b"x")
        st, ans = s.post(target.split("&Token=")[0], body, ctype)
        self.assertEqual((st, ans), (401, {"error": "Token is missing"}))
        # A Token for other content: the body was changed in transit.
        st, _ = s.post(target, body.replace(b'"FCntUp": 0', b'"FCntUp": 7'), ctype)
        self.assertEqual(st, 401)
        # Garbage XML and JSON, a bad field: 400.
        st, ans = s.post(target, b"<DevEUI_uplink><DevEUI>", "application/xml")
        self.assertEqual(st, 400)
        self.assertIn("not XML", ans["error"])
        st, ans = s.post(target, b"{\"DevEUI_uplink\": {\"DevEUI\": 5}}", "application/json")
        self.assertEqual(st, 400)
        st, ans = s.post(target, b"{\"DevEUI_uplink\": {\"DevEUI\": \"XYZ\", \"FCntUp\": 1}}",
                         "application/json")
        self.assertEqual((st, ans), (400, {"error": "DevEUI must be 16 hexadecimal digits"}))
        # An unknown device without an AppSKey field: 404.
        s.add_device(DEV2, astk)
        st, ans = s.uplink(DEV2, b"x", with_key=False)
        self.assertEqual(st, 404)
        self.assertIn("unknown DevEUI", ans["error"])
        # A body over max-body: 413; another path: 404; GET: 405.
        st, _ = s.post(target, b"{" + b" " * 20000 + b"}", "application/json")
        self.assertEqual(st, 413)
        st, _ = s.post(target, body, ctype, path="/other")
        self.assertEqual(st, 404)
        c = __import__("http.client").client.HTTPConnection("127.0.0.1", t.port, timeout=10)
        c.request("GET", "/")
        self.assertEqual(c.getresponse().status, 405)
        c.close()
        # Nothing of it reached the journal; each is counted.
        self.assertEqual(t.uplinks(), [])
        tn = t.status()["tunnel"]
        self.assertEqual(tn["accepted"], 0)
        self.assertEqual(tn["badToken"], 3)
        self.assertEqual(tn["staleTime"], 2)
        self.assertEqual(tn["badRequest"], 3)
        self.assertEqual(tn["unknownDevice"], 1)
        self.assertEqual(tn["tooBig"], 1)
        self.assertEqual(tn["notFound"], 1)
        self.assertEqual(tn["badMethod"], 1)
        # The daemon still serves.
        self.assertEqual(s.uplink(DEV, b"fine")[0], 200)
        log = t.log_text()
        # The log says what to check, the answer and REASON stay short.
        self.assertIn("401 for DevEUI 0024AEB3C02BE1C4: bad Token (the AS route's tunnel key "
                      "and tunnel.key-file differ, or this request does not come from the "
                      "LRC) STATUS=401 REASON=bad Token ", log)

    def tls_tpas(self, lines=""):
        """A started tpas whose tunnel speaks TLS, and its certificate's path."""
        cert, key = self.self_signed("tunnel")
        t = self.tpas()
        self.tunnel_conf(t, f"tls-cert-file = {cert}\ntls-key-file = {key}\n" + lines)
        return t.start(), cert

    def tunnel_socket(self, t, cert=None):
        """A connection to t's tunnel (TLS with cert)."""
        raw = socket.create_connection(("127.0.0.1", t.port))
        if not cert:
            return raw
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        return ctx.wrap_socket(raw)

    def test_behind_a_tls_reverse_proxy(self):
        """As deployed behind a TLS-terminating proxy (stunnel4 here) at a path of its own
        (tunnel.path): the LRC speaks HTTPS to the proxy, tpas plain HTTP on loopback."""
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        if not exe:
            self.skipTest("stunnel4 is not installed")
        cert, key = self.self_signed("proxy")
        t = self.tpas()
        self.tunnel_conf(t, "path = /lrc/uplink\n")
        t.start()
        astk = self.import_astk(t)
        port = free_port()
        conf = os.path.join(self.tmp, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"foreground = yes\npid =\n[tunnel]\naccept = 127.0.0.1:{port}\n"
                    f"connect = 127.0.0.1:{t.port}\ncert = {cert}\nkey = {key}\n")
        log = open(os.path.join(self.tmp, "stunnel.log"), "wb")
        proxy = subprocess.Popen([exe, conf], stdout=log, stderr=log)
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(listening, 10, "stunnel to listen")
            s = self.lrc(t)
            s.as_url = f"https://127.0.0.1:{port}/lrc/uplink"
            s.cafile = cert
            s.add_device(DEV, astk)
            for i in range(3):
                self.assertEqual(s.uplink(DEV, b"via proxy %d" % i,
                                          fmt="xml" if i % 2 else "json"),
                                 (200, {"seq": i + 1, "duplicate": False}))
            # A resend through the proxy is the same uplink.
            st, ans = s.uplink(DEV, b"via proxy 2", fcnt=2)
            self.assertEqual((st, ans), (200, {"seq": 3, "duplicate": True}))
            # Another path through the proxy: 404.
            target, body, ctype = s.build_uplink(DEV, b"elsewhere")
            self.assertEqual(s.post(target, body, ctype, path="/")[0], 404)
        finally:
            proxy.terminate()
            proxy.wait(10)
            log.close()
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"via proxy %d" % i for i in range(3)])

    def test_pipelined_uplinks_then_a_half_close_are_all_answered(self):
        """Two uplinks in one write, then the client shuts its side: both are journaled and
        answered before the connection closes, over plain HTTP and TLS."""
        for tls in (False, True):
            with self.subTest(tls=tls):
                t, cert = self.tls_tpas() if tls else (self.tpas().start(), None)
                astk = self.import_astk(t)
                s = self.lrc(t)
                s.add_device(DEV, astk)
                data = b""
                for fcnt in (0, 1):
                    target, body, ctype = s.build_uplink(DEV, b"p%d" % fcnt, fcnt=fcnt)
                    data += (b"POST /" + target.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                             b"Content-Type: " + ctype.encode() + b"\r\nContent-Length: %d"
                             b"\r\n\r\n" % len(body) + body)
                c = self.tunnel_socket(t, cert)
                c.settimeout(10)
                c.sendall(data)
                # The TCP side shut (over TLS without a close_notify, as a crashed sender).
                tcp = socket.socket(fileno=os.dup(c.fileno()))
                tcp.shutdown(socket.SHUT_WR)
                tcp.close()
                got = read_all(c, until_error=True)  # TLS: a close without close_notify
                c.close()
                self.assertEqual(got.count(b"HTTP/1.1 200 OK\r\n"), 2, got)
                self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                                 [b"p0", b"p1"])
                t.stop()

    def test_connections_over_max_connections_wait_for_one_to_close(self):
        t = self.tpas(extra="[tunnel]\nmax-connections = 3\n").start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        idle = []
        for _ in range(3):
            idle.append(socket.create_connection(("127.0.0.1", t.port), timeout=5))
        wait_for(lambda: t.status()["tunnel"]["connections"] == 3, 10, "3 connections")
        self.assertEqual(t.status()["tunnel"]["connectionLimitHit"], 1)
        # A fourth waits in the listen backlog: connected, but not served ...
        res = {}
        th = threading.Thread(target=lambda: res.update(r=s.uplink(DEV, b"waited")))
        th.start()
        time.sleep(0.7)
        self.assertNotIn("r", res)
        self.assertEqual(t.status()["tunnel"]["requests"], 0)
        # ... until one of the three closes; then it is, and nothing else changed.
        idle.pop().close()
        th.join(10)
        self.assertEqual(res["r"], (200, {"seq": 1, "duplicate": False}))
        self.assertIn("tunnel.max-connections", t.log_text())
        for c in idle:
            c.close()
        wait_for(lambda: t.status()["tunnel"]["connections"] == 0, 10, "connections to close")
        self.assertEqual(s.uplink(DEV, b"after")[0], 200)
        self.assertGreaterEqual(t.status()["tunnel"]["connectionLimitHit"], 1)
        # Pinned at the cap, each close lets one in and the cap is reached again: that is
        # one episode, counted once, not once per connection.
        hits = t.status()["tunnel"]["connectionLimitHit"]
        held = [socket.create_connection(("127.0.0.1", t.port), timeout=5) for _ in range(2)]
        for _ in range(30):
            socket.create_connection(("127.0.0.1", t.port), timeout=5).close()
        wait_for(lambda: t.status()["tunnel"]["connections"] == 2, 10, "the churn to close")
        self.assertLessEqual(t.status()["tunnel"]["connectionLimitHit"] - hits, 1)
        for c in held:
            c.close()
        wait_for(lambda: t.status()["tunnel"]["connections"] == 0, 10, "connections to close")
        # Ten arriving at once: never more than three open.
        burst = [socket.create_connection(("127.0.0.1", t.port), timeout=5) for _ in range(10)]
        time.sleep(0.5)
        self.assertEqual(t.status()["tunnel"]["connections"], 3)
        for c in burst:
            c.close()
        wait_for(lambda: t.status()["tunnel"]["connections"] == 0, 10, "the burst to close")

    def test_warns_when_the_limits_exceed_the_open_file_limit(self):
        t = self.tpas(extra="[tunnel]\nmax-connections = 400\n")
        with open(t.log_path, "wb") as log:
            p = subprocess.Popen(["prlimit", "--nofile=300:", TPAS, "--config", t.conf],
                                 stdout=log, stderr=log)
            try:
                wait_for(lambda: "ready" in t.log_text(), 20, "tpas to start")
            finally:
                p.terminate()
                p.wait(20)
        self.assertIn("tunnel.max-connections (400) and limits.max-clients (256) may need 720 "
                      "descriptors, over the open-file limit 300", t.log_text())
        # Within the limit: no warning.
        self.assertNotIn("open-file limit", self.tpas().start().log_text())

    def test_slow_and_silent_clients_do_not_hold_the_tunnel(self):
        """A client that leaves its request unfinished for tunnel.timeout is answered 408,
        counted and closed; one that sends nothing is closed; others are served meanwhile."""
        t, s = self.tunnel_ready("timeout = 2s\n")
        slow = socket.create_connection(("127.0.0.1", t.port))
        slow.sendall(b"POST /?Token=x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
        silent = socket.create_connection(("127.0.0.1", t.port))
        try:
            t0 = time.monotonic()
            for i in range(3):
                self.assertEqual(s.uplink(DEV, b"meanwhile %d" % i)[0], 200)
            self.assertLess(time.monotonic() - t0, 1.5)
            slow.settimeout(10)
            silent.settimeout(10)
            got = read_all(slow)
            waited = time.monotonic() - t0
            self.assertTrue(got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got)
            self.assertIn(b"Connection: close\r\n", got)
            self.assertIn(b"tunnel.timeout", got)
            self.assertGreater(waited, 1.5)
            self.assertEqual(silent.recv(4096), b"")  # closed without a word
        finally:
            slow.close()
            silent.close()
        self.assertEqual(len(t.uplinks()), 3)
        tn = t.status()["tunnel"]
        self.assertEqual(tn["timedOut"], 1)
        self.assertEqual(tn["requests"], 4)
        self.assertIn("Request Timeout from 127.0.0.1", t.log_text())

    def test_http_framing(self):
        """What an LRC's HTTP client may do on one connection: Expect: 100-continue, a
        chunked body, two requests pipelined (answered in order), HTTP/1.0; and what it may
        not: a header section over 16 KB (431), bytes that are not HTTP (400). Each ends
        in a clear answer and a counter."""
        t, s, _ = self.started()

        def request(fcnt, extra_headers=b"", chunked=False, version=b"1.1"):
            target, body, ctype = s.build_uplink(DEV, b"framed %d" % fcnt, fcnt=fcnt)
            head = (b"POST /" + target.encode() + b" HTTP/" + version + b"\r\nHost: t\r\n"
                    b"Content-Type: " + ctype.encode() + b"\r\n" + extra_headers)
            if chunked:
                mid = len(body) // 2
                return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
                    b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:mid], body[mid:])) + \
                    b"0\r\n\r\n"
            return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

        def read_answer(f, head=False):
            status = f.readline()
            headers = {}
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = b"" if head else f.read(int(headers.get("content-length", "0")))
            return status, headers, body

        c = socket.create_connection(("127.0.0.1", t.port))
        c.settimeout(10)
        f = c.makefile("rb")
        # Expect: 100-continue: the body is sent once the server says so.
        req = request(0, b"Expect: 100-continue\r\n")
        head, body = req.split(b"\r\n\r\n", 1)
        c.sendall(head + b"\r\n\r\n")
        self.assertEqual(f.readline(), b"HTTP/1.1 100 Continue\r\n")
        self.assertEqual(f.readline(), b"\r\n")
        c.sendall(body)
        st, h, b = read_answer(f)
        self.assertEqual(st, b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(json.loads(b)["seq"], 1)
        # A chunked body, then two pipelined requests in one write.
        c.sendall(request(1, chunked=True))
        self.assertEqual(json.loads(read_answer(f)[2])["seq"], 2)
        c.sendall(request(2) + request(3))
        self.assertEqual([json.loads(read_answer(f)[2])["seq"] for _ in range(2)], [3, 4])
        # Too large a header section: 431, and the connection ends.
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
        st, h, b = read_answer(f)
        self.assertEqual(st, b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        self.assertEqual(h["connection"], "close")
        self.assertEqual(f.read(), b"")
        c.close()
        # HTTP/1.0: answered, then closed.
        c = socket.create_connection(("127.0.0.1", t.port))
        c.settimeout(10)
        f = c.makefile("rb")
        c.sendall(request(4, version=b"1.0"))
        st, h, b = read_answer(f)
        self.assertEqual(st, b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(f.read(), b"")
        c.close()
        # Not HTTP: 400.
        got = exchange(t.port, b"\x16\x03\x01 hello, this is not HTTP\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got)
        self.assertIn(b'{"error":"malformed request line (not HTTP/1.x)"}', got)
        # HTTP, but framed two ways at once (a smuggling attempt): 400, naming the part.
        got = exchange(t.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n{}")
        self.assertIn(b'{"error":"malformed header section"}', got)
        # Chunked in HTTP/1.0, which has no such framing (RFC 9112 §6.1): 400 as well.
        got = exchange(t.port, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"2\r\n{}\r\n0\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got)
        self.assertIn(b'{"error":"malformed header section"}', got)
        # A request line over 16 KB: 414, not "header section too large".
        got = exchange(t.port, b"POST /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), got)
        self.assertIn(b'{"error":"request line too long"}', got)
        # The absolute form a proxy may send; HTTP/1.0 with keep-alive; HEAD (no body); a
        # blank line after a request (not a new one); an unknown expectation (417).
        c = socket.create_connection(("127.0.0.1", t.port))
        c.settimeout(10)
        f = c.makefile("rb")
        req = request(5, b"Connection: keep-alive\r\n", version=b"1.0")
        c.sendall(req.replace(b"POST /?", b"POST http://127.0.0.1:%d/?" % t.port, 1) +
                  b"\r\n")
        st, h, b = read_answer(f)
        self.assertEqual((st, h.get("connection")), (b"HTTP/1.1 200 OK\r\n", "keep-alive"))
        c.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        st, h, b = read_answer(f, head=True)
        self.assertEqual(st, b"HTTP/1.1 405 Method Not Allowed\r\n")
        self.assertGreater(int(h["content-length"]), 0)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}")
        # The next line is this answer's status line: no body of the HEAD came before it.
        self.assertEqual(read_answer(f)[0], b"HTTP/1.1 417 Expectation Failed\r\n")
        c.close()
        # A body over four times tunnel.max-body: 413 (the header section was fine).
        got = exchange(t.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n{")
        self.assertTrue(got.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), got)
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"framed %d" % i for i in range(6)])
        tn = t.status()["tunnel"]
        self.assertEqual((tn["accepted"], tn["tooBig"], tn["badRequest"], tn["badMethod"],
                          tn["timedOut"]), (6, 3, 4, 1, 0))
        self.assertEqual(tn["requests"], 14)

    def test_expect_continue_invites_only_what_can_be_taken(self):
        """A body announced with Expect: 100-continue is invited only for a POST to the
        tunnel within max-body; anything else is answered before the body is sent; an
        HTTP/1.0 client's Expect is ignored (RFC 9110 10.1.1)."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        target, body, ctype = s.build_uplink(DEV, b"one", fcnt=0)

        def first_line(head):
            c = socket.create_connection(("127.0.0.1", t.port))
            c.settimeout(0.7)
            c.sendall(head)
            try:
                got = c.recv(200).split(b"\r\n")[0]
            except socket.timeout:
                got = None
            return c, got

        for head, want in [
                (b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 20000\r\n\r\n", b"HTTP/1.1 413 Payload Too Large"),
                (b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 200\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
                (b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 200\r\n\r\n", b"HTTP/1.1 404 Not Found")]:
            with self.subTest(head=head.split(b"\r\n")[0]):
                c, got = first_line(head)
                self.assertEqual(got, want)
                c.close()
        # HTTP/1.0: no 100 Continue; the body it sends anyway is taken.
        c, got = first_line(b"POST /" + target.encode() + b" HTTP/1.0\r\nContent-Type: " +
                            ctype.encode() + b"\r\nExpect: 100-continue\r\n" +
                            b"Content-Length: %d\r\n\r\n" % len(body))
        self.assertIsNone(got)
        c.settimeout(10)
        c.sendall(body)
        self.assertEqual(c.recv(200).split(b"\r\n")[0], b"HTTP/1.1 200 OK")
        c.close()
        tn = t.status()["tunnel"]
        self.assertEqual((tn["accepted"], tn["tooBig"], tn["badMethod"], tn["notFound"]),
                         (1, 1, 1, 1))

    def test_a_client_that_does_not_read_is_held_then_closed(self):
        """Requests pipelined by a client that never reads its answers: tpas stops reading
        them once an answer cannot be written (its memory stays small), and closes the
        connection after tunnel.timeout; a blank line after a request starts none."""
        t = self.tpas()
        self.tunnel_conf(t, "timeout = 2s\n")
        t.start()

        def rss_kb():
            with open(f"/proc/{t.proc.pid}/status") as f:
                return int(next(x for x in f if x.startswith("VmRSS:")).split()[1])
        before = rss_kb()
        c = socket.create_connection(("127.0.0.1", t.port))
        c.setblocking(False)
        one = b"GET /nothere HTTP/1.1\r\nHost: t\r\n\r\n"
        chunk, sent, t0 = one * 4096, 0, time.monotonic()
        while time.monotonic() - t0 < 1.5:
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        answered = t.status()["tunnel"]["notFound"]
        self.assertLess(answered, sent // len(one))  # it stopped reading
        if os.environ.get("TPAD_SANITIZE", "none") == "none":  # ASan keeps freed memory
            self.assertLess(rss_kb() - before, 16 * 1024)
        # Nobody reads: closed after tunnel.timeout.
        c.setblocking(True)
        c.settimeout(10)
        wait_for(lambda: t.status()["connections"] is not None and
                 "does not read its answers" in t.log_text(), 10, "the close")
        c.close()
        # A blank line after a request, then silence: an idle close, not a 408.
        got = exchange(t.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 404"), got)
        self.assertNotIn(b"408", got)
        self.assertEqual(t.status()["tunnel"]["timedOut"], 0)

    def test_a_long_pipeline_read_as_it_is_answered_is_all_answered(self):
        """A client that pipelines far more than tpas holds unread (reading pauses once
        max-body + 80 KiB wait, and goes on as the requests are taken) and reads the
        answers as they come: every request is answered, on the one connection."""
        t = self.tpas().start()
        n, one = 20000, b"GET /nothere HTTP/1.1\r\nHost: t\r\n\r\n"  # 700 KB in all
        c = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        sender = threading.Thread(target=c.sendall, args=(one * n,))
        sender.start()
        mark, tail, answers = b"HTTP/1.1 404 ", b"", 0
        while answers < n:
            chunk = c.recv(1 << 16)  # a pause that never ended would time out here
            if not chunk:
                break
            buf = tail + chunk
            answers += buf.count(mark)
            tail = buf[-(len(mark) - 1):]
        sender.join(10)
        c.close()
        self.assertEqual(answers, n)
        self.assertEqual(t.status()["tunnel"]["notFound"], n)

    def test_a_tls_client_that_does_not_read_is_held_then_closed(self):
        """The same over TLS: answers wait in the socket, not in tpas, and the client is
        closed after tunnel.timeout."""
        t, cert = self.tls_tpas("timeout = 2s\n")
        c = self.tunnel_socket(t, cert)
        c.setblocking(False)
        one = b"GET /nothere HTTP/1.1\r\nHost: t\r\n\r\n"
        chunk, sent, t0, closed = one * 400, 0, time.monotonic(), False
        while time.monotonic() - t0 < 5 and not closed:
            try:
                sent += c.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                time.sleep(0.01)
            except OSError:
                closed = True  # tpas closed it: it did not read its answers
        c.close()
        self.assertTrue(closed or "does not read its answers" in t.log_text())
        wait_for(lambda: "does not read its answers" in t.log_text(), 10, "the close")
        self.assertLess(t.status()["tunnel"]["notFound"], sent // len(one))

    def test_tls_listener(self):
        cert, key = self.self_signed("tunnel")
        t = self.tpas()
        self.tunnel_conf(t, f"tls-cert-file = {cert}\ntls-key-file = {key}\n")
        t.start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        s.as_url = f"https://127.0.0.1:{t.port}"
        s.cafile = cert
        s.add_device(DEV, astk)
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"over TLS %d" % i, fmt="xml" if i % 2 else "json"),
                             (200, {"seq": i + 1, "duplicate": False}))
        self.assertEqual(s.uplink(DEV, b"x", key="0" * 32)[0], 401)
        # A client that asks to close after the answer still gets it.
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", t.port))) as c:
            c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: 2\r\n\r\n{}")
            data = read_all(c)
        self.assertTrue(data.startswith(b"HTTP/1.1 401 "), data)
        self.assertIn(b"Token is missing", data)
        # A renewed certificate is read at start only: SIGHUP says so, naming the file.
        cert2, key2 = self.self_signed("tunnel2")
        os.replace(cert2, cert)
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in t.log_text(), 10, "the reload")
        self.assertIn(f"tunnel.tls-cert-file ({cert}) changed since tpas started; it is read "
                      "at start only: restart tpas to use it", t.log_text())
        self.assertNotIn("tunnel.tls-key-file (", t.log_text())
        # Plain HTTP on the TLS port gets no HTTP answer; the handshake failure is counted.
        s.as_url = t.url
        with self.assertRaises((OSError, __import__("http.client").client.HTTPException)):
            s.uplink(DEV, b"plain")
        wait_for(lambda: t.status()["tunnel"]["tlsFailed"] == 1, 5, "the TLS failure count")
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"over TLS 0", b"over TLS 1", b"over TLS 2"])
        # A key file others may read is refused at start.
        t.stop()
        os.chmod(key, 0o644)
        fix = f"{key} is readable by other users: run chmod o-rwx {key}"
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn(fix, p.stderr)
        t.proc = subprocess.Popen([TPAS, "--config", t.conf], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        out, _ = t.proc.communicate(timeout=20)
        self.assertEqual(t.proc.returncode, 1)
        self.assertIn(fix, out)
        t.proc = None

    def test_missing_astk_then_import_and_key_envelope(self):
        t = self.tpas().start()
        s = self.lrc(t)
        astk = os.urandom(16)
        s.add_device(DEV, astk)
        st, ans = s.uplink(DEV, b"early")
        self.assertEqual(st, 503)
        self.assertIn("no ASTK", ans["error"])
        self.astks.append(astk)
        p = t.tpactl("as", "import-astk", encrypt_astk(self.public_pem, astk), check=0)
        self.assertIn("ASTK stored", p.stdout)
        # The LRC retries: now it goes through.
        self.assertEqual(s.uplink(DEV, b"early")[0], 200)
        # A TS002 key envelope names its ASTK by KEKLabel (RFC 3394).
        kek = self.import_astk(t, label="kek-7")
        s.add_device(DEV2, kek, kek_label="kek-7", customer_id="42")
        self.assertEqual(s.uplink(DEV2, b"wrapped", fmt="xml")[0], 200)
        self.assertEqual(s.uplink(DEV2, b"wrapped json")[0], 200)
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"early", b"wrapped", b"wrapped json"])
        # A label we do not hold, and an envelope that does not unwrap with the label's key.
        s.add_device("1111111111111111", kek, kek_label="nope")
        st, ans = s.uplink("1111111111111111", b"x")
        self.assertEqual(st, 503)
        s.add_device("2222222222222222", os.urandom(16), kek_label="kek-7")
        st, ans = s.uplink("2222222222222222", b"x")
        self.assertEqual(st, 401)
        self.assertIn("does not unwrap", ans["error"])
        self.assertEqual(t.status()["tunnel"]["wrongKey"], 1)
        # The log says what to do about it; the answer to the poster does not.
        self.assertIn("2222222222222222: AppSKey does not unwrap with the ASTK labelled "
                      "'kek-7' (the LRC uses another ASTK under that label: import its "
                      "encryptedASKey with tpactl as import-astk)", t.log_text())
        self.assertNotIn("import-astk", ans["error"])
        # The list shows the ASTKs, never the keys.
        p = t.tpactl("--json", "as", "astks", check=0)
        astks = json.loads(p.stdout)["astks"]
        self.assertEqual([a["label"] for a in astks], ["", "kek-7"])
        self.assertNotIn(astk.hex(), p.stdout.lower())

    def test_scoped_astks_pick_the_most_specific(self):
        t = self.tpas().start()
        general = self.import_astk(t)
        for_customer = self.import_astk(t, customer_id="777")
        for_device = self.import_astk(t, dev_eui=DEV2)
        s = self.lrc(t)
        s.add_device(DEV, for_customer, customer_id="777")
        s.add_device(DEV2, for_device, customer_id="777")
        s.add_device("3333333333333333", general, customer_id="1")
        for d in (DEV, DEV2, "3333333333333333"):
            self.assertEqual(s.uplink(d, d.encode())[0], 200)
        got = {u["devEUI"]: bytes.fromhex(u["payload"]) for u in t.uplinks()}
        self.assertEqual(got, {d: d.encode() for d in (DEV, DEV2, "3333333333333333")})

    def test_the_same_astk_imported_again_adds_nothing(self):
        """An admin who runs the same import-astk twice (a script run again) gets the id
        the key already has, said so, and ListASTKs shows it once; the same key for
        another scope is another ASTK."""
        t = self.tpas().start()
        enc = encrypt_astk(self.public_pem, os.urandom(16))
        first = t.tpactl("as", "import-astk", enc, check=0).stdout
        m = re.search(r"ASTK stored as id (\d+)", first)
        self.assertIsNotNone(m, first)
        again = t.tpactl("as", "import-astk", enc, check=0).stdout
        self.assertIn(f"ASTK already stored as id {m.group(1)} (the same key, label and "
                      "scope): nothing added", again)
        with Client(t.admin) as c:
            self.assertEqual(c.call("io.tpad.ASAdmin.ImportASTK", {"encryptedASKey": enc}),
                             {"id": int(m.group(1)), "existing": True})
            self.assertEqual(len(c.call("io.tpad.ASAdmin.ListASTKs")["astks"]), 1)
            other = c.call("io.tpad.ASAdmin.ImportASTK",
                           {"encryptedASKey": enc, "customerID": "777"})
            self.assertFalse(other["existing"])
            self.assertEqual(len(c.call("io.tpad.ASAdmin.ListASTKs")["astks"]), 2)
        self.assertIn("imported again: the same key, nothing added", t.log_text())

    def test_a_scope_no_uplink_can_match_is_refused_at_import(self):
        """A label or CustomerID an uplink's field could never hold is refused by name."""
        t = self.tpas().start()
        enc = encrypt_astk(self.public_pem, os.urandom(16))
        for flag, value, param in (("--label", "\u00e9-label", "label"),
                                   ("--label", 'q"uote', "label"),
                                   ("--customer-id", "cust \u00e9", "customerID")):
            with self.subTest(value=value):
                with Client(t.admin) as c:
                    with self.assertRaises(VarlinkError) as e:
                        c.call("io.tpad.ASAdmin.ImportASTK",
                               {"encryptedASKey": enc, param: value})
                self.assertEqual(e.exception.error, "io.tpad.ASAdmin.InvalidParameter")
                self.assertEqual(e.exception.params["parameter"], param)
                # tpactl checks it before sending, as a usage error naming its option.
                p = t.tpactl("as", "import-astk", enc, flag, value)
                self.assertEqual(p.returncode, 2, p.stdout)
                self.assertIn(f"tpactl: {flag} must be", p.stderr)
        self.assertEqual(t.tpactl("as", "astks", "--json", check=0).stdout.strip(), '{"astks":[]}')

    def test_bad_encrypted_askey_and_no_rsa_key(self):
        t = self.tpas().start()
        p = t.tpactl("as", "import-astk", "00" * 256)
        self.assertEqual(p.returncode, 1)
        self.assertIn("BadASKey", p.stderr)
        p = t.tpactl("as", "import-astk", "0g")
        self.assertEqual(p.returncode, 2)
        os.rename(self.rsa_key, self.rsa_key + ".away")
        try:
            p = t.tpactl("as", "import-astk", encrypt_astk(self.public_pem, os.urandom(16)))
        finally:
            os.rename(self.rsa_key + ".away", self.rsa_key)
        self.assertEqual(p.returncode, 1)
        self.assertIn("NoRsaKey", p.stderr)


class Journal(TpasCase):
    def test_replay_is_answered_idempotently_and_delivered_once(self):
        t, s, astk = self.started()
        target, body, ctype = s.build_uplink(DEV, b"once")
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 1, "duplicate": False}))
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 1, "duplicate": True}))
        # The same frame in the other syntax is the same uplink.
        target, body, ctype = s.build_uplink(DEV, b"once", fmt="xml")
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 1, "duplicate": True}))
        self.assertEqual(len(t.uplinks()), 1)
        self.assertEqual(t.status()["tunnel"]["duplicates"], 2)
        # A rejoin (a new AppSKey) starts counting again: FCntUp 0 is a new uplink.
        s.add_device(DEV, astk)
        self.assertEqual(s.uplink(DEV, b"after rejoin"), (200, {"seq": 2, "duplicate": False}))

    def test_a_journal_readable_by_others_is_restricted_at_start(self):
        """A journal left 0644 (an older install, a copy under umask 022) is made 0600 at
        start, as tpad does with its store: it holds uplinks and sealed keys, and SQLite
        makes its -wal and -shm with its mode."""
        t, s, astk = self.started()
        t.stop()
        db = os.path.join(t.workdir, "tpas.db")
        os.chmod(db, 0o644)
        t.start()
        self.assertEqual(s.uplink(DEV, b"x")[0], 200)
        for f in (db, db + "-wal", db + "-shm"):
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o600, f)

    def test_the_uplinks_kept_for_streams_are_bounded_in_bytes(self):
        """tpas keeps the newest uplinks encoded for the following streams: at most 4,096
        and at most 8 MiB of them, whatever tunnel.max-body lets an uplink weigh (it was
        4,096 of any size, with or without a stream: 900 KB uplinks took 900 KB each). A
        stream from further back reads the journal and misses none."""
        t, s = self.tunnel_ready("max-body = 1M\n")

        def rss_kb():
            with open(f"/proc/{t.proc.pid}/status") as f:
                return int(next(x for x in f if x.startswith("VmRSS:")).split()[1])
        before = rss_kb()
        big = {"CustomerData": {"blob": "x" * 900000}}
        for i in range(28):  # 25 MB of uplinks
            self.assertEqual(s.uplink(DEV, b"%02d" % i, extra=big)[0], 200)
        if os.environ.get("TPAD_SANITIZE", "none") == "none":  # ASan keeps freed memory
            self.assertLess(rss_kb() - before, 16 * 1024)
        ups = t.uplinks()
        self.assertEqual([u["seq"] for u in ups], list(range(1, 29)))
        self.assertEqual(ups[-1]["payload"], b"27".hex().upper())
        self.assertEqual(len(ups[0]["radio"]["CustomerData"]["blob"]), 900000)

    def test_replays_with_unsigned_fields_changed_are_replays(self):
        """The Token signs the query before it and some body fields only: a replay that
        brings a fresh Time after the Token, another AppSKey field or another FCntDn is
        still the same request (each of these was once taken as new)."""
        s, t = self.served_lrc()
        astk = self.import_astk(t)
        s.add_device(DEV, astk)
        s.state["devices"][DEV]["fcnt_dn"] = 3
        target, body, ctype = s.build_uplink(DEV, b"first", fcnt=1)
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 1, "duplicate": False}))
        # A parameter after the Token is not signed: refused, whatever it is.
        fresh = urllib.parse.quote(lrc_time(), safe=":")
        st, ans = s.post(target + "&Time=" + fresh, body, ctype)
        self.assertEqual(st, 400)
        self.assertIn("after Token", ans["error"])
        # Another AppSKey field (any 16 bytes unwrap) and a higher FCntDn: the same request.
        doc = json.loads(body)
        doc["DevEUI_uplink"]["AppSKey"] = "00" * 16
        doc["DevEUI_uplink"]["FCntDn"] = 4000000000
        self.assertEqual(s.post(target, json.dumps(doc).encode(), ctype),
                         (200, {"seq": 1, "duplicate": True}))
        self.assertEqual(t.status()["journal"]["sessions"], 1)
        # The LRC's own retry with FCntDn moved on is the same uplink too; the next uplink
        # brings the counter, and the downlink after it uses it (the session cache was once
        # moved by the replay, and the journal never was).
        s.state["devices"][DEV]["fcnt_dn"] = 7
        target2, body2, ctype2 = s.build_uplink(DEV, b"first", fcnt=1)
        self.assertEqual(s.post(target2, body2, ctype2), (200, {"seq": 1, "duplicate": True}))
        self.assertEqual(s.uplink(DEV, b"second")[0], 200)
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "00"})
        self.assertEqual(r["fCntDn"], 7)
        self.assertEqual(len(t.uplinks()), 2)
        self.assertEqual(s.state["violations"], [])

    def test_concurrent_connections_and_replays_group_committed(self):
        devs = ["00000000000000%02X" % i for i in range(6)]
        t, s, _ = self.started(devs)
        reqs = [s.build_uplink(d, b"%s/%d" % (d.encode(), i), fcnt=i)
                for d in devs for i in range(20)]
        answers = [[] for _ in range(len(reqs))]

        def worker(k):
            # Two connections send every uplink: each is a replay of the other's.
            for idx in range(k % 3, len(reqs), 3):
                answers[idx].append(s.post(*reqs[idx]))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        for a in answers:
            self.assertEqual([st for st, _ in a], [200, 200])
            self.assertEqual(a[0][1]["seq"], a[1][1]["seq"])
            self.assertEqual(sorted(x["duplicate"] for _, x in a), [False, True])
        ups = t.uplinks()
        self.assertEqual(len(ups), len(reqs))
        self.assertEqual(sorted((u["devEUI"], u["fCntUp"]) for u in ups),
                         sorted((d, i) for d in devs for i in range(20)))
        tn = t.status()["tunnel"]
        self.assertEqual((tn["accepted"], tn["duplicates"]), (len(reqs), len(reqs)))

    def test_new_sessions_are_written_with_their_uplinks_and_never_hold_the_loop(self):
        # Devices joining while the journal's write lock is held (here by another
        # connection; in production by a long commit): each first uplink brings its new
        # session to the writer, which adds it in the uplink's own transaction. The loop
        # never waits for the lock itself, so Status answers at once meanwhile. Uplinks of
        # a session still being committed (the same field again, and one without the field)
        # are read with its key and add it only once.
        devs = ["00000000000001%02X" % i for i in range(12)]
        t, s, _ = self.started(devs)
        first = [s.build_uplink(d, b"first " + d.encode(), fcnt=0) for d in devs]
        time.sleep(0.01)
        again = s.build_uplink(devs[0], b"again", fcnt=1)
        keyless = s.build_uplink(devs[1], b"keyless", fcnt=1, with_key=False)
        holder = sqlite3.connect(os.path.join(t.workdir, "tpas.db"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        answers = {}

        def post(name, req):
            answers[name] = s.post(*req)
        threads = [threading.Thread(target=post, args=(d, r)) for d, r in zip(devs, first)]
        for th in threads:
            th.start()
        wait_for(lambda: t.status()["tunnel"]["requests"] >= len(devs), 5, "the first uplinks")
        later = [threading.Thread(target=post, args=(n, r))
                 for n, r in (("again", again), ("keyless", keyless))]
        for th in later:
            th.start()
        wait_for(lambda: t.status()["tunnel"]["requests"] >= len(devs) + 2, 5, "the others")
        t0 = time.monotonic()
        st = t.status()
        took = time.monotonic() - t0
        self.assertLess(took, 0.5, "Status waited for the journal's write lock")
        self.assertEqual(st["journal"]["sessions"], 0)  # none written by the loop
        self.assertEqual(answers, {})  # none answered before its commit
        self.assertNotIn("new session key for DevEUI 00000000000001", t.log_text())
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        holder.close()
        for th in threads + later:
            th.join(30)
        self.assertEqual(sorted(answers), sorted(devs + ["again", "keyless"]))
        self.assertEqual({st for st, _ in answers.values()}, {200}, answers)
        self.assertEqual(t.status()["journal"]["sessions"], len(devs))
        # Each logged once, as stored: once committed with its uplink.
        self.assertEqual(t.log_text().count("new session key for DevEUI 00000000000001"),
                         len(devs))
        got = {(u["devEUI"], bytes.fromhex(u["payload"])) for u in t.uplinks()}
        self.assertEqual(got, {(d, b"first " + d.encode()) for d in devs} |
                         {(devs[0], b"again"), (devs[1], b"keyless")})
        # The sessions are known after a restart too, with their keys.
        t.stop()
        t.start()
        self.assertEqual(s.uplink(devs[1], b"later", fcnt=2, with_key=False)[0], 200)
        self.assertEqual(bytes.fromhex(t.uplinks()[-1]["payload"]), b"later")

    def test_a_oneway_stream_is_ended_at_once(self):
        """Uplinks with oneway has nobody to read it: it ends at once instead of reading
        the whole journal on the loop and following new uplinks for nobody."""
        t, s, _ = self.started()
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"m%d" % i)[0], 200)
        with Client(t.apps) as c:
            c.send("io.tpad.AS.Uplinks", {}, oneway=True)
            self.assertEqual(c.call("org.varlink.service.GetInfo")["product"], "tpas")
            self.assertEqual(t.status()["subscribers"], 0)

    def test_an_application_that_quits_is_let_go_at_once(self):
        """A following application that closes its socket (or shuts its side, then closes)
        ends its stream and its connection without waiting for the next uplink to fail."""
        t = self.tpas().start()

        def gone():
            st = t.status()
            return st["subscribers"] == 0 and st["connections"]["apps"] == 0
        for half_close_first in (False, True):
            with self.subTest(half_close_first=half_close_first):
                app = Client(t.apps, timeout=10)
                app.send("io.tpad.AS.Uplinks", {}, more=True)
                wait_for(lambda: t.status()["subscribers"] == 1, 5, "the stream")
                if half_close_first:
                    app.sock.shutdown(socket.SHUT_WR)
                    time.sleep(0.3)
                    # Still following: the client may only have shut its side.
                    self.assertEqual(t.status()["subscribers"], 1)
                app.close()
                wait_for(gone, 2, "the stream and its connection to end")

    def test_application_restart_resumes_from_its_sequence(self):
        t, s, _ = self.started()
        app = Client(t.apps, timeout=10)
        app.send("io.tpad.AS.Uplinks", {}, more=True)
        got = []
        for i in range(5):
            self.assertEqual(s.uplink(DEV, b"m%d" % i)[0], 200)
        while len(got) < 5:
            r = app.recv()
            self.assertTrue(r.get("continues"))
            got.append(r["parameters"]["uplink"])
        self.assertEqual(t.status()["subscribers"], 1)
        last = got[-1]["seq"]
        app.close()  # the application goes away
        for i in range(5, 12):
            self.assertEqual(s.uplink(DEV, b"m%d" % i)[0], 200)
        with Client(t.apps, timeout=10) as app:
            app.send("io.tpad.AS.Uplinks", {"after": last}, more=True)
            rest = [app.recv()["parameters"]["uplink"] for _ in range(7)]
            # Live ones follow on the same stream.
            self.assertEqual(s.uplink(DEV, b"live")[0], 200)
            rest.append(app.recv()["parameters"]["uplink"])
        seen = got + rest
        self.assertEqual([bytes.fromhex(u["payload"]) for u in seen],
                         [b"m%d" % i for i in range(12)] + [b"live"])
        self.assertEqual([u["seq"] for u in seen], list(range(1, 14)))
        # And after a restart of tpas itself.
        t.stop()
        t.start()
        self.assertEqual([u["seq"] for u in t.uplinks(after=10)], [11, 12, 13])
        wait_for(lambda: t.status()["subscribers"] == 0, 5, "the closed stream to go")

    def test_a_slow_reader_catching_up_is_owed_at_most_256_kb_and_one_uplink(self):
        """A stream read from the journal (after a restart, or not following) stops at
        256 KB owed to a client that does not read, one uplink past it at most, and goes
        on once the client reads. It checked the limit once per 64 uplinks read: with the
        LRC's large bodies a client was owed some 600 KB more."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        n, pad = 80, "p" * 12000  # a field the LRC adds, kept in the stream
        for i in range(n):
            self.assertEqual(s.uplink(DEV, b"m%d" % i, extra={"Pad": pad})[0], 200)
        with Client(t.apps, timeout=10) as app:
            app.send("io.tpad.AS.Uplinks", {"follow": False}, more=True)
            owed = []

            def settled():
                owed.append(t.status()["outputOwed"])
                return len(owed) > 3 and owed[-1] > 0 and len(set(owed[-3:])) == 1
            wait_for(settled, 10, "the stream to pause")
            self.assertLessEqual(owed[-1], (256 + 16) * 1024)
            got = []
            while True:
                r = app.recv()
                if "uplink" in r["parameters"]:
                    got.append(r["parameters"]["uplink"]["seq"])
                if not r.get("continues"):
                    break
        self.assertEqual(got, list(range(1, n + 1)))
        wait_for(lambda: t.status()["outputOwed"] == 0, 5, "nothing owed")

    def test_kill9_loses_nothing_and_lrc_retries_deliver_each_uplink_once(self):
        t, s, _ = self.started()
        n = 120
        answered = {}
        stop = threading.Event()

        def lrc_loop():
            # The LRC's rule: repeat an uplink until it gets a 200.
            for i in range(n):
                target, body, ctype = s.build_uplink(DEV, b"u%d" % i, fcnt=i)
                while not stop.is_set():
                    try:
                        st, ans = s.post(target, body, ctype)
                    except OSError:
                        time.sleep(0.02)
                        continue
                    if st == 200:
                        answered[i] = ans["seq"]
                        break
                    time.sleep(0.02)
        th = threading.Thread(target=lrc_loop)
        th.start()
        wait_for(lambda: len(answered) >= 30, 30, "30 uplinks")
        t.kill9()
        acked_before = dict(answered)
        time.sleep(0.3)
        t.start()
        wait_for(lambda: len(answered) >= 70, 30, "70 uplinks")
        t.kill9()
        time.sleep(0.2)
        t.start()
        th.join(60)
        stop.set()
        self.assertEqual(len(answered), n)
        ups = t.uplinks()
        # Every uplink once, in counter order, each under the seq its 200 named.
        self.assertEqual([u["fCntUp"] for u in ups], list(range(n)))
        self.assertEqual([bytes.fromhex(u["payload"]) for u in ups], [b"u%d" % i for i in range(n)])
        by_fcnt = {u["fCntUp"]: u["seq"] for u in ups}
        for i, seq in answered.items():
            self.assertEqual(by_fcnt[i], seq)
        for i, seq in acked_before.items():
            self.assertEqual(by_fcnt[i], seq)

    def test_group_commit_under_load_survives_kill9_and_streams_match_journal(self):
        """16 LRC connections at once: the writer thread commits them in batches (fewer
        transactions than uplinks, counted in Status); kill -9 while posts are in flight
        loses none that was answered 200 (each keeps the seq its 200 named); the live stream
        (sent from memory) gives the same objects as reading the journal back."""
        devs = ["70B3D5000000%04X" % i for i in range(16)]
        t, s, _ = self.started(devs)
        n = 20
        answered = {}
        lock = threading.Lock()
        stop = threading.Event()

        def lrc_conn(d):
            for i in range(n):
                target, body, ctype = s.build_uplink(d, b"%s/%d" % (d.encode(), i), fcnt=i,
                                                     fmt="xml" if i % 5 == 4 else "json")
                while not stop.is_set():
                    try:
                        st, ans = s.post(target, body, ctype)
                    except OSError:
                        time.sleep(0.02)
                        continue
                    if st == 200:
                        with lock:
                            answered[(d, i)] = ans["seq"]
                        break
                    time.sleep(0.02)

        # An application following the stream; it reconnects from its last seq.
        live = []
        app_stop = threading.Event()

        def app():
            while not app_stop.is_set():
                try:
                    with Client(t.apps, timeout=0.5) as c:
                        c.send("io.tpad.AS.Uplinks", {"after": live[-1]["seq"] if live else 0},
                               more=True)
                        while not app_stop.is_set():
                            try:
                                r = c.recv()
                            except socket.timeout:
                                continue
                            live.append(r["parameters"]["uplink"])
                except (OSError, EOFError):
                    time.sleep(0.05)
        app_th = threading.Thread(target=app)
        app_th.start()
        threads = [threading.Thread(target=lrc_conn, args=(d,)) for d in devs]
        for th in threads:
            th.start()
        try:
            wait_for(lambda: len(answered) >= 100, 60, "100 uplinks")
            j = t.status()["journal"]
            self.assertGreaterEqual(j["batchedUplinks"], 100)
            self.assertLess(j["batches"], j["batchedUplinks"])
            self.assertGreater(j["largestBatch"], 1)
            t.kill9()
            with lock:
                acked = dict(answered)
            t.start()
            for th in threads:
                th.join(120)
        finally:
            stop.set()
            for th in threads:
                th.join(10)
        total = len(devs) * n
        self.assertEqual(len(answered), total)
        ups = t.uplinks()
        self.assertEqual(len(ups), total)
        self.assertEqual(sorted((u["devEUI"], u["fCntUp"]) for u in ups),
                         sorted((d, i) for d in devs for i in range(n)))
        seq_of = {(u["devEUI"], u["fCntUp"]): u["seq"] for u in ups}
        for k, seq in acked.items():
            self.assertEqual(seq_of[k], seq, k)
        for k, seq in answered.items():
            self.assertEqual(seq_of[k], seq, k)
        for u in ups:
            d, i = u["devEUI"], u["fCntUp"]
            self.assertEqual(bytes.fromhex(u["payload"]), b"%s/%d" % (d.encode(), i))
        wait_for(lambda: len(live) >= total, 30, "the stream to catch up")
        app_stop.set()
        app_th.join(10)
        self.assertEqual(live, ups)

    def test_retention_goes_by_the_lrc_clock_not_this_hosts_alone(self):
        """A journal whose newest uplink is 400 days older than this host's clock (after a
        restart, the same as a clock set 400 days ahead): nothing is removed until a signed
        request shows the LRC's clock; a Time the deviation check refuses shows nothing;
        then what is old by that clock goes."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"k%d" % i)[0], 200)
        t.stop()
        subprocess.run(["sqlite3", os.path.join(t.workdir, "tpas.db"),
                        "UPDATE uplink SET received_ms = received_ms - 400 * 86400000"],
                       check=True)
        t.start()
        wait_for(lambda: "once a signed request shows the LRC's clock" in t.log_text(), 10,
                 "the prune waiting")
        ancient = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00",
                                time.gmtime(time.time() - 400 * 86400))
        self.assertEqual(s.uplink(DEV, b"old", time=ancient)[0], 401)
        time.sleep(1.5)  # the prune is looked at every second
        with Client(t.apps) as c:
            out = c.call_more("io.tpad.AS.Uplinks", {"after": 0, "follow": False})
        self.assertEqual([r["uplink"]["seq"] for r in out if "uplink" in r], [1, 2, 3])
        self.assertNotIn("older than 30 days removed", t.log_text())
        self.assertEqual(s.uplink(DEV, b"k3")[0], 200)
        wait_for(lambda: "3 uplinks older than 30 days removed" in t.log_text(), 10,
                 "the prune")
        with Client(t.apps) as c:
            out = c.call_more("io.tpad.AS.Uplinks", {"after": 0, "follow": False})
        self.assertEqual([r["uplink"]["seq"] for r in out if "uplink" in r], [4])

    def test_a_stream_resumed_past_the_retention_says_what_it_missed(self):
        """An application away longer than store.retention-days: the first reply of its
        resumed stream names the last seq removed (prunedThrough), and tpactl says it on
        stderr (the gap was silent); one within the retention gets no such field."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for i in range(5):
            self.assertEqual(s.uplink(DEV, b"r%d" % i)[0], 200)
        self.prune(t, s, 3, 3)
        with Client(t.apps) as c:
            out = c.call_more("io.tpad.AS.Uplinks", {"after": 1, "follow": False})
        self.assertEqual(out[0]["prunedThrough"], 3)
        self.assertEqual([r["uplink"]["seq"] for r in out if "uplink" in r], [4, 5])
        self.assertEqual(sum("prunedThrough" in r for r in out), 1)
        for after in (0, 3, 4):
            with Client(t.apps) as c:
                out = c.call_more("io.tpad.AS.Uplinks", {"after": after, "follow": False})
            self.assertFalse(any("prunedThrough" in r for r in out), after)
        p = subprocess.run([TPACTL, "--socket", t.apps, "as", "uplinks", "--after", "1"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("uplinks after 1 up to 3 were removed", p.stderr)
        self.assertIn("were removed (store.retention-days)", t.log_text())
        # Every uplink after `after` removed: a followed stream is told at once, without
        # waiting for the next uplink.
        self.prune(t, s, 5, 2)
        with Client(t.apps, 5) as c:
            c.send("io.tpad.AS.Uplinks", {"after": 3}, more=True)
            self.assertEqual(c.recv(), {"parameters": {"prunedThrough": 5}, "continues": True})
            self.assertEqual(s.uplink(DEV, b"r5")[0], 200)
            first = c.recv()
            self.assertEqual(first["parameters"]["uplink"]["seq"], 6)
            self.assertNotIn("prunedThrough", first["parameters"])

    def test_uplinks_pruned_while_a_stream_catches_up_are_named(self):
        """A prune that runs while a stream is reading the journal (paused behind a slow
        reader) is named by prunedThrough on the reply after the gap, as at the start."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for _ in range(800):
            self.assertEqual(s.uplink(DEV, b"x", extra={"Pad": "p" * 1500})[0], 200)
        t.stop()  # the streams read the journal, not the uplinks kept in memory
        t.start()
        c = socket.socket(socket.AF_UNIX)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(t.apps)
        c.sendall(json.dumps({"method": "io.tpad.AS.Uplinks", "parameters": {"after": 0},
                             "more": True}).encode() + b"\0")
        data = c.recv(3000)
        time.sleep(0.5)  # the stream pauses behind its unread replies
        # What the hourly prune does to uplinks older than store.retention-days.
        subprocess.run(["sqlite3", os.path.join(t.workdir, "tpas.db"),
                        "DELETE FROM uplink WHERE seq <= 600"], check=True)
        c.settimeout(10)
        while b'"seq":800,' not in data:
            d = c.recv(1 << 20)
            self.assertTrue(d, "the stream ended")
            data += d
        c.close()
        replies = [json.loads(m)["parameters"] for m in data.split(b"\0")[:-1]]
        seqs = [r["uplink"]["seq"] for r in replies]
        cut = seqs.index(601)
        self.assertLess(cut, 600)
        self.assertEqual(seqs, list(range(1, cut + 1)) + list(range(601, 801)))
        self.assertEqual([(r["uplink"]["seq"], r["prunedThrough"]) for r in replies
                          if "prunedThrough" in r], [(601, 600)])
        self.assertIn(f"uplink stream after seq {cut}: uplinks up to seq 600 were removed",
                      t.log_text())

    def test_a_large_prune_holds_neither_the_loop_nor_the_wal(self):
        """300,000 uplinks past store.retention-days (a busy network's day) are removed a
        step at a time, tpas answering in between, and the WAL is cut back to 8 MiB once
        the next uplink commits. One DELETE held the loop ~0.7 s on the machines of the
        README and left a ~100 MB WAL until tpas stopped. The WAL is copied back by the
        writer thread as the steps go (SQLite's own checkpoint on the loop's connection
        let it grow to 10,000 pages, then held the loop 40 ms copying them)."""
        n = 300000
        t = self.tpas(extra="[store]\nretention-days = 1\n").start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"x")[0], 200)
        t.stop()
        db = os.path.join(t.workdir, "tpas.db")
        # n copies of that uplink, 3 days old (fcnt_up and the replay token told apart).
        subprocess.run(["sqlite3", db, f"""
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n})
            INSERT INTO uplink (received_ms, session_id, dev_eui, customer_id, dev_addr,
                                fport, fcnt_up, fcnt_dn, time, payload, encrypted, radio,
                                token, token_time)
            SELECT received_ms - 3 * 86400000, session_id, dev_eui, customer_id, dev_addr,
                   fport, 1000 + i, fcnt_dn, time, payload, encrypted, radio,
                   randomblob(16), token_time - i FROM uplink, c WHERE seq = 1;
            UPDATE uplink SET received_ms = received_ms - 3 * 86400000 WHERE seq = 1;
            INSERT OR IGNORE INTO uplink_seen (dev_eui, session_id, fcnt_up, seq)
              SELECT dev_eui, session_id, fcnt_up, seq FROM uplink;
            UPDATE meta SET value = (SELECT MAX(seq) FROM uplink) WHERE key = 'seen_through';
            PRAGMA wal_checkpoint(TRUNCATE);"""], check=True)  # (as tpas's open would)
        t.start()
        worst, wal, done = [0.0], [0], threading.Event()

        def poll():
            with Client(t.admin, 30) as c:
                while not done.is_set():
                    t0 = time.monotonic()
                    c.call("io.tpad.AS.Status")
                    worst[0] = max(worst[0], time.monotonic() - t0)
                    try:
                        wal[0] = max(wal[0], os.path.getsize(db + "-wal"))
                    except FileNotFoundError:
                        pass
                    time.sleep(0.005)
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            self.show_lrc_clock(s)  # the prune follows
            wait_for(lambda: f"{n + 1} uplinks older than 1 days removed" in t.log_text(),
                     15, "the prune")
        finally:
            done.set()
            poller.join()
        self.assertLess(worst[0], 0.2, "Status waited for the prune")
        self.assertLess(wal[0], 16 << 20, "the WAL grew while the prune went on")
        self.assertEqual(s.uplink(DEV, b"y")[0], 200)
        self.assertLessEqual(os.path.getsize(db + "-wal"), 8 << 20)
        # The journal emptied, the next seq follows the last removed.
        self.assertEqual([u["seq"] for u in t.uplinks()], [n + 2])

    def test_a_stream_after_the_last_seq_is_refused(self):
        """Uplinks(after) past lastSeq (a store put back from a backup) is InvalidParameter
        naming after and lastSeq, followed or not: waiting for seq after + 1 would skip
        the uplinks journaled in between without a word."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"u%d" % i)[0], 200)
        for follow in (False, True):
            with Client(t.apps) as c:
                with self.assertRaises(VarlinkError) as e:
                    c.call_more("io.tpad.AS.Uplinks", {"after": 10, "follow": follow})
            self.assertEqual(e.exception.error, "io.tpad.AS.InvalidParameter")
            self.assertEqual(e.exception.params, {
                "parameter": "after", "reason": "10 is past the journal's lastSeq 3"})
        with Client(t.apps) as c:
            self.assertEqual(c.call_more("io.tpad.AS.Uplinks", {"after": 3, "follow": False}),
                             [{}])

    def test_one_tpas_per_store(self):
        """A second tpas on the same store.path, or on a symbolic link to it, is refused at
        start, naming the first; --check-config (read only, no lock) still passes beside
        the running one."""
        t = self.tpas().start()
        t2 = self.tpas()
        with open(t2.conf) as f:
            conf = f.read()
        link = os.path.join(t2.workdir, "same.db")
        os.symlink(f"{t.workdir}/tpas.db", link)
        for path in (f"{t.workdir}/tpas.db", link):
            with open(t2.conf, "w") as f:
                f.write(conf.replace(f"path = {t2.workdir}/tpas.db", f"path = {path}")
                        .replace(t2.store_key_file, t.store_key_file))
            p = subprocess.run([TPAS, "--config", t2.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(f"{path} is in use by another tpas (pid {t.proc.pid}): "
                          "one tpas per store", p.stderr)
            self.assertFalse(os.path.exists(t2.apps), "the second tpas must not bind sockets")
        p = subprocess.run([TPAS, "--config", t2.conf, "--check-config"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(t.status()["journal"]["uplinks"], 0)
        # Once the first stops, the lock is free.
        t.stop()
        t2.start()

    def test_a_newer_journal_is_refused_saying_what_to_do(self):
        """A rollback: the journal of a newer tpas is refused, at start and by
        --check-config, untouched, with what to do: start the newer tpas again (a copy of
        an older schema holds old FCntDn counters)."""
        t = self.tpas().start()
        t.stop()
        db = os.path.join(t.workdir, "tpas.db")
        subprocess.run(["sqlite3", db, "PRAGMA user_version = 99"], check=True,
                       capture_output=True)
        with open(db, "rb") as f:
            before = f.read()
        for args in ((), ("--check-config",)):
            p = subprocess.run([TPAS, "--config", t.conf, *args], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(f"{db}: schema version 99 is newer than this tpas supports (5); "
                          "refusing to open it: start the newer tpas again (a copy of an "
                          "older schema holds old FCntDn counters: see tpas(8), store.path)",
                          p.stderr)
        with open(db, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_disk_full(self):
        """A full disk: uplinks 503 and downlinks StoreFailed naming it, nothing sent or lost,
        and service again once space is freed (run in its own mount namespace)."""
        if os.getuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private tmpfs")
        inner = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "tpas_storefail_inner.py")
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                            inner, self.tmp], capture_output=True, text=True, timeout=120)
        if p.returncode == 77:
            self.skipTest(p.stdout.strip())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_store_file_is_private_and_keys_sealed(self):
        t = self.tpas().start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        dev = s.add_device(DEV, astk)
        self.assertEqual(s.uplink(DEV, b"x")[0], 200)
        t.stop()
        db = os.path.join(t.workdir, "tpas.db")
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)
        with open(db, "rb") as f:
            raw = f.read().hex()
        self.assertNotIn(astk.hex(), raw)
        self.assertNotIn(dev["appskey"], raw)
        # Another store key is refused outright: Commands.test_a_store_key_that_is_not_the_stores_is_refused.


class Downlink(TpasCase):
    def test_downlink_encrypted_signed_and_fcntdn_never_reused(self):
        s, t = self.served_lrc()
        astk = self.import_astk(t)
        s.add_device(DEV, astk)
        # Unknown until an uplink brought its key.
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "00"})
            self.assertEqual(e.exception.error, "io.tpad.AS.UnknownDevice")
        # tpactl says where the key comes from, not only the error's name.
        p = t.tpactl("as", "send", "--dev-eui", DEV, "--port", "2", "--payload", "00", check=1)
        self.assertEqual(p.stderr.splitlines()[0], f"tpactl: UnknownDevice: devEUI={DEV}")
        self.assertIn("it takes it from an uplink carrying the AppSKey field", p.stderr)
        s.state["devices"][DEV]["fcnt_dn"] = 5  # the network's counter, as the LRC reports it
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV.lower(), "fPort": 2,
                                                   "payload": b"open".hex()})
        self.assertEqual(r["status"], 200)
        self.assertEqual(r["answer"], "Request queued by LRC")
        self.assertEqual(r["fCntDn"], 5)
        d = s.state["downlinks"][-1]
        self.assertEqual((d["dev_eui"], d["fport"], d["fcnt_dn"]), (DEV, 2, 5))
        self.assertEqual(bytes.fromhex(d["payload"]), b"open")
        self.assertEqual(d["as_id"], "tpas-test")
        # tpactl as send, then a restart, then more: the counter only goes up.
        p = t.tpactl("as", "send", "--dev-eui", DEV, "--port", "3", "--payload",
                     b"close".hex(), "--confirmed", check=0)
        self.assertIn("FCntDn 6", p.stdout)
        self.assertTrue(s.state["downlinks"][-1]["confirmed"])
        t.kill9()
        t.start()
        with Client(t.apps) as c:
            for i in range(3):
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": ""})
        # The LRC fails one: the counter is spent anyway, the next one is fresh.
        s.faults["downlink_status"] = 500
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "01"})
            self.assertEqual(e.exception.error, "io.tpad.AS.LrcFailed")
            self.assertEqual(e.exception.params["status"], 500)
            self.assertEqual(e.exception.params["fCntDn"], 10)
        s.faults["downlink_status"] = None
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "02"})
        self.assertEqual(r["fCntDn"], 11)
        # An answer that is not UTF-8 (Latin-1 here) still names the counter it used.
        s.faults["downlink_answer"] = b"Requ\xeate accept\xe9e"
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "04"})
        s.faults["downlink_answer"] = None
        self.assertEqual((r["fCntDn"], r["status"]), (12, 200))
        self.assertEqual(r["answer"], "Requ\ufffdte accept\ufffde")
        # One with NULs, at its start too: all of it, each NUL U+FFFD (JSON readers such
        # as tpactl's refuse \u0000).
        s.faults["downlink_answer"] = b"\x00queued\x00 ok"
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "05"})
        self.assertEqual((r["fCntDn"], r["answer"]), (13, "\ufffdqueued\ufffd ok"))
        p = t.tpactl("as", "send", "--dev-eui", DEV, "--port", "1", "--payload", "06", check=0)
        self.assertIn("sent with FCntDn 14: LRC answered 200 \ufffdqueued\ufffd ok", p.stdout)
        s.faults["downlink_answer"] = None
        used = [d["fcnt_dn"] for d in s.state["downlinks"]]
        self.assertEqual(used, [5, 6, 7, 8, 9, 11, 12, 13, 14])
        self.assertEqual(s.state["violations"], [])
        # An uplink reporting a higher network counter moves ours up.
        s.state["devices"][DEV]["fcnt_dn"] = 40
        self.assertEqual(s.uplink(DEV, b"hi again")[0], 200)
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "03"})
        self.assertEqual(r["fCntDn"], 40)

    def test_downlink_counters_ride_the_writer_thread_up_to_the_last(self):
        """A downlink's FCntDn is committed by the journal's writer thread, in a batch of
        its own or with uplinks, never by a commit on the event loop (which would make
        every uplink wait for its fsync); the counters go up to 2^32 - 1, then
        CounterExhausted, nothing spent nor sent."""
        t, s = self.downlink_ready()
        s.state["devices"][DEV]["fcnt_dn"] = 2**32 - 2  # the LRC's, reported by an uplink
        self.assertEqual(s.uplink(DEV, b"late")[0], 200)
        with Client(t.apps) as c:
            before = c.call("io.tpad.AS.Status")["journal"]
            got = [c.call("io.tpad.AS.SendDownlink",
                          {"devEUI": DEV, "fPort": 1, "payload": "0%d" % i})["fCntDn"]
                   for i in range(2)]
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "02"})
            after = c.call("io.tpad.AS.Status")["journal"]
        self.assertEqual(got, [2**32 - 2, 2**32 - 1])
        self.assertEqual(e.exception.error, "io.tpad.AS.CounterExhausted")
        self.assertEqual(e.exception.params, {"devEUI": DEV})
        self.assertEqual([d["fcnt_dn"] for d in s.state["downlinks"]], got)
        # Three takes, each in a writer transaction; none on the loop, no uplink counted.
        self.assertEqual(after["commits"] - after["batches"],
                         before["commits"] - before["batches"])
        self.assertEqual(after["batches"] - before["batches"], 3)
        self.assertEqual(after["batchedUplinks"], before["batchedUplinks"])
        self.assertEqual(s.state["violations"], [])

    def test_downlinks_to_one_device_reach_the_lrc_in_fcntdn_order(self):
        """Two applications send a downlink to one device at once, and the first POST is
        slow on its way (two LRC sessions): the second, with the higher FCntDn, is not
        posted before the LRC answered the first, or the LRC would queue it first and the
        device drop the lower one after it, both answered 200."""
        t, s = self.downlink_ready()
        orig = s.handle_downlink
        first_in = threading.Event()

        def slow_first(target):
            if "&FCntDn=0&" in target:
                first_in.set()
                time.sleep(1)
            return orig(target)
        s.handle_downlink = slow_first
        answers = {}

        def send(payload):
            with Client(t.apps, 30) as c:
                answers[payload] = c.call("io.tpad.AS.SendDownlink",
                                          {"devEUI": DEV, "fPort": 1, "payload": payload})
        first = threading.Thread(target=send, args=("01",))
        first.start()
        self.assertTrue(first_in.wait(10), "the first downlink at the LRC")
        send("02")
        first.join(30)
        self.assertEqual({p: (a["fCntDn"], a["status"]) for p, a in answers.items()},
                         {"01": (0, 200), "02": (1, 200)})
        self.assertEqual([(d["fcnt_dn"], d["payload"]) for d in s.state["downlinks"]],
                         [(0, "01"), (1, "02")])
        self.assertEqual(s.state["violations"], [])

    def test_a_late_retry_from_the_previous_session_does_not_replace_the_new_one(self):
        # The device rejoins (a new AppSKey) while the LRC still retries an uplink of its
        # previous session: that key must not become the device's newest.
        s, t = self.served_lrc()
        astk = self.import_astk(t)
        s.add_device(DEV, astk, dev_addr="01020304")
        old = s.build_uplink(DEV, b"old A", fcnt=0)  # its first POST is lost
        time.sleep(0.05)
        s.add_device(DEV, astk, dev_addr="01020305")  # the rejoin
        self.assertEqual(s.uplink(DEV, b"new B")[0], 200)
        self.assertEqual(s.post(*old)[0], 200)  # the retry, still within the Time window
        self.assertEqual(s.uplink(DEV, b"new C", with_key=False)[0], 200)
        t.stop()
        t.start()
        self.assertEqual(s.uplink(DEV, b"new D", with_key=False)[0], 200)
        got = [(bytes.fromhex(u["payload"]), u["encrypted"]) for u in t.uplinks()]
        self.assertEqual(got, [(b"new B", False), (b"old A", False), (b"new C", False),
                               (b"new D", False)])
        with Client(t.apps) as c:
            c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2,
                                               "payload": b"HELLO".hex()})
        # The LRC decrypts with the key the device has now.
        self.assertEqual(bytes.fromhex(s.state["downlinks"][-1]["payload"]), b"HELLO")
        self.assertEqual(s.state["violations"], [])

    def test_a_late_uplink_without_the_key_field_is_read_with_its_own_session(self):
        # An uplink of the previous session that comes without the AppSKey field, posted
        # after the device rejoined (the LRC retried it, or its first POST sat in a
        # connection): read with the key of the session it was received in, by the
        # network's Time, not the newest; journaled once, under that session, whatever
        # Time the LRC signs its retries with. (chaos_tpas.py found it: the newest key read
        # it, so it was journaled a second time, garbled.)
        s, t = self.served_lrc()
        astk = self.import_astk(t)
        s.add_device(DEV, astk, dev_addr="01020304")
        self.assertEqual(s.uplink(DEV, b"A 0")[0], 200)
        received = lrc_time()
        late = s.build_uplink(DEV, b"A 1", fcnt=1, with_key=False, time=received)
        resigned = s.build_uplink(
            DEV, b"A 1", fcnt=1, with_key=False, extra={"Time": received},
            time=lrc_time(datetime.datetime.now(datetime.timezone.utc)
                          + datetime.timedelta(milliseconds=300)))
        time.sleep(0.05)
        s.add_device(DEV, astk, dev_addr="01020305")  # the rejoin
        self.assertEqual(s.uplink(DEV, b"B 0")[0], 200)
        st, first = s.post(*late)
        self.assertEqual((st, first["duplicate"]), (200, False))
        time.sleep(0.3)
        st, again = s.post(*resigned)
        self.assertEqual((st, again["seq"], again["duplicate"]), (200, first["seq"], True))
        self.assertEqual(s.uplink(DEV, b"B 1", with_key=False)[0], 200)
        got = [(bytes.fromhex(u["payload"]), u["devAddr"]) for u in t.uplinks()]
        self.assertEqual(got, [(b"A 0", "01020304"), (b"B 0", "01020305"),
                               (b"A 1", "01020304"), (b"B 1", "01020305")])

    def test_an_uplink_without_the_key_waits_for_its_sessions_key(self):
        # The LRC posts a session's uplink without the AppSKey field before the one that
        # carries its key (that one's POST held up, or lost and retried). No session known
        # then can have carried it: answered 503 (counted noSession), and read with its
        # own key once that came, on the LRC's next POST. (The Spin model of the session
        # rule found both: taken with the newest session, or the one before the rejoin, it
        # was journaled under another session's key and took its FCntUp.)
        s, t = self.served_lrc()
        astk = self.import_astk(t)
        s.add_device(DEV, astk, dev_addr="01020304")
        self.assertEqual(s.uplink(DEV, b"A 0")[0], 200)
        s.add_device(DEV, astk, dev_addr="01020305")  # the rejoin: session B
        b0 = s.build_uplink(DEV, b"B 0", fcnt=0)
        time.sleep(0.01)
        b1 = s.build_uplink(DEV, b"B 1", fcnt=1, with_key=False)
        st, ans = s.post(*b1)  # A had begun by then, but B's DevAddr is not A's
        self.assertEqual(st, 503, ans)
        self.assertIn("another DevAddr", ans["error"])
        self.assertEqual(s.post(*b0)[0], 200)
        self.assertEqual(s.post(*b1)[0], 200)
        # Session C's uplinks are held up until D's first one came: the newest session
        # that had begun by C 1's Time is B, whose DevAddr is not C's.
        s.add_device(DEV, astk, dev_addr="01020306")
        held = [s.build_uplink(DEV, b"C 0", fcnt=0)]
        time.sleep(0.01)
        held.append(s.build_uplink(DEV, b"C 1", fcnt=1, with_key=False))
        time.sleep(0.01)
        s.add_device(DEV, astk, dev_addr="01020307")  # D
        self.assertEqual(s.uplink(DEV, b"D 0")[0], 200)
        st, ans = s.post(*held[1])
        self.assertEqual(st, 503, ans)
        self.assertIn("another DevAddr", ans["error"])
        self.assertEqual(s.post(*held[0])[0], 200)
        self.assertEqual(s.post(*held[1])[0], 200)
        got = [(bytes.fromhex(u["payload"]), u["devAddr"], u["fCntUp"]) for u in t.uplinks()]
        self.assertEqual(got, [(b"A 0", "01020304", 0), (b"B 0", "01020305", 0),
                               (b"B 1", "01020305", 1), (b"D 0", "01020307", 0),
                               (b"C 0", "01020306", 0), (b"C 1", "01020306", 1)])
        self.assertEqual(t.status()["tunnel"]["noSession"], 2)
        # tpactl as status shows them with the other refusals.
        self.assertIn(", 2 no session,", t.tpactl("as", "status").stdout)
        # Downlinks still go under the newest session (D's key, D's DevAddr).
        with Client(t.apps) as c:
            c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "01"})
        self.assertEqual(s.state["violations"], [])
        self.assertEqual(s.state["downlinks"][-1]["payload"], "01")

    def test_a_session_begins_at_the_earliest_uplink_with_its_key(self):
        # The LRC sends the key in some uplinks only. Its first uplink (with the key) is
        # held up; the third (with the key) comes first, so the session seems to begin
        # there and the second (without) is refused; once the first came, the session
        # began at its Time, and the second is read on the LRC's next POST.
        s, t = self.served_lrc()
        s.add_device(DEV, self.import_astk(t), dev_addr="01020304")
        ups = []
        for n in range(3):
            ups.append(s.build_uplink(DEV, b"A %d" % n, fcnt=n, with_key=n != 1))
            time.sleep(0.01)
        self.assertEqual(s.post(*ups[2])[0], 200)
        st, ans = s.post(*ups[1])
        self.assertEqual(st, 503, ans)
        self.assertIn("none had begun by its Time", ans["error"])
        self.assertEqual(s.post(*ups[0])[0], 200)
        self.assertEqual(s.post(*ups[1])[0], 200)
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"A 2", b"A 0", b"A 1"])
        t.stop()  # the start moved back in the store too, not only in the cache
        t.start()
        self.assertEqual(s.post(*ups[1])[1]["duplicate"], True)

    def test_the_same_appskey_in_another_field_is_the_same_session(self):
        # The LRC moves to key envelopes (or another ASTK) and retries an uplink journaled
        # already: the same key is the same session, so the retry is a replay and no
        # downlink counter starts again.
        s, t = self.served_lrc()
        block_astk = self.import_astk(t)
        kek = self.import_astk(t, label="kek-b")
        s.add_device(DEV, block_astk)
        st, first = s.uplink(DEV, b"reading 5", fcnt=5)
        self.assertEqual((st, first["duplicate"]), (200, False))
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "AA"})
        self.assertEqual(r["fCntDn"], 0)
        time.sleep(0.01)  # another Time: another Token
        s.state["devices"][DEV].update(astk=kek.hex(), kek_label="kek-b")
        st, again = s.uplink(DEV, b"reading 5", fcnt=5, extra={"FCntDn": 0})
        self.assertEqual((st, again["seq"], again["duplicate"]), (200, first["seq"], True))
        self.assertEqual(s.uplink(DEV, b"reading 6", fcnt=6)[0], 200)
        t.stop()
        t.start()
        self.assertEqual(s.uplink(DEV, b"reading 7", fcnt=7)[0], 200)
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "BB"})
        self.assertEqual(r["fCntDn"], 1)
        self.assertEqual([bytes.fromhex(u["payload"]) for u in t.uplinks()],
                         [b"reading 5", b"reading 6", b"reading 7"])
        self.assertEqual(t.status()["journal"]["sessions"], 1)
        self.assertEqual([d["fcnt_dn"] for d in s.state["downlinks"]], [0, 1])
        self.assertEqual(s.state["violations"], [])

    def test_a_burst_to_a_slow_lrc_is_busy_instead_of_timing_out(self):
        """A slow LRC (3 s an answer, request-timeout 5 s, two sessions): a burst of 30
        to one device gets one posted and, behind it, one held per session at most; once the LRC's
        pace is known, only what can be answered within the timeout is taken (one: the
        device's next would be posted once it is answered, 6 s on), the rest Busy with no
        FCntDn spent."""
        t, s = self.downlink_ready()
        s.faults["downlink_delay"] = 3

        def burst(n):
            out = {}
            lock = threading.Lock()

            def one():
                with Client(t.apps, 30) as c:
                    try:
                        c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1,
                                                            "payload": ""})
                        k = "ok"
                    except VarlinkError as e:
                        k = e.error
                with lock:
                    out[k] = out.get(k, 0) + 1
            threads = [threading.Thread(target=one) for _ in range(n)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            return out
        first = burst(30)
        self.assertLessEqual(first.get("io.tpad.AS.LrcFailed", 0), 2, first)
        # Before the pace is known: one posted, and lrc.sessions (2) held behind it.
        self.assertEqual(first.get("io.tpad.AS.Busy", 0), 27, first)
        second = burst(30)
        self.assertEqual(second.get("io.tpad.AS.LrcFailed", 0), 0, second)
        self.assertEqual((second["ok"], second["io.tpad.AS.Busy"]), (1, 29), second)
        s.faults["downlink_delay"] = 0
        spent = sum(v for k, v in list(first.items()) + list(second.items())
                    if k != "io.tpad.AS.Busy")
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": ""})
        self.assertEqual(r["fCntDn"], spent)

    def test_busy_spends_no_downlink_counter(self):
        """More downlinks than the LRC queue takes (256 waiting, a slow LRC, one session):
        the ones answered Busy took no FCntDn, so the counters the LRC received run without
        a hole (each Busy spent one, never sent)."""
        t, s = self.downlink_ready("[lrc]\nsessions = 1\nrequest-timeout = 60s\n")
        s.faults["downlink_delay"] = 0.01
        out = {}
        lock = threading.Lock()

        def burst():
            with Client(t.apps, 120) as c:
                for _ in range(60):
                    c.send("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": ""})
                for _ in range(60):
                    k = c.recv().get("error", "ok")
                    with lock:
                        out[k] = out.get(k, 0) + 1
        threads = [threading.Thread(target=burst) for _ in range(5)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        s.faults["downlink_delay"] = 0
        self.assertGreater(out.get("io.tpad.AS.Busy", 0), 0, out)
        self.assertEqual(out["ok"] + out["io.tpad.AS.Busy"], 300, out)
        used = sorted(d["fcnt_dn"] for d in s.state["downlinks"])
        self.assertEqual(used, list(range(out["ok"])))
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": ""})
        self.assertEqual(r["fCntDn"], out["ok"])
        self.assertEqual(s.state["violations"], [])

    def test_a_journal_in_memory_commits_counters_on_the_loop(self):
        """store.path = :memory: (no second connection, so no writer thread): a downlink's
        counter is committed on the loop before the POST, as downlink_send() does once the
        writer is drained; counters go up, nothing is sent twice."""
        s = self.lrc(None, serve=True)
        t = self.tpas(lrc_url=f"http://127.0.0.1:{s.port}")
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(re.sub(r"(?m)^path = .*tpas\.db$", "path = :memory:", conf, count=1))
        t.start()
        s.as_url = t.url
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        with Client(t.apps) as c:
            got = [c.call("io.tpad.AS.SendDownlink",
                          {"devEUI": DEV, "fPort": 1, "payload": "0%d" % i})["fCntDn"]
                   for i in range(3)]
            j = c.call("io.tpad.AS.Status")["journal"]
        self.assertEqual(got, [0, 1, 2])
        self.assertEqual([(d["fcnt_dn"], d["payload"]) for d in s.state["downlinks"]],
                         [(0, "00"), (1, "01"), (2, "02")])
        self.assertEqual(j["batches"], 0)  # no writer thread: every commit on the loop
        self.assertEqual(s.state["violations"], [])
        self.assertIn("store.path is :memory:: the journal, keys and FCntDn counters live in "
                      "memory only and are lost at exit (for tests)", t.log_text())

    def test_a_burst_takes_the_ready_sessions_and_the_queue(self):
        """Downlinks to five devices in one write, the LRC's two sessions ready and slow
        to answer: four are taken (their counters committed by the writer thread
        meanwhile), two go to the sessions and two wait in the queue (lrc.sessions), as
        when counters were committed on the loop; the fifth is Busy, nothing spent."""
        t, s = self.downlink_ready()
        astk = self.astks[-1]
        devs = [DEV] + ["70B3D5FFFFFF10%02X" % i for i in range(4)]
        for d in devs[1:]:
            s.add_device(d, astk)
            self.assertEqual(s.uplink(d, b"hi")[0], 200)
        with Client(t.apps) as c:  # both sessions connected and ready
            for d in devs[:2]:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": d, "fPort": 1, "payload": ""})
        wait_for(lambda: [x["state"] for x in t.status()["lrc"]["sessions"]]
                 == ["ready", "ready"], 10, "two ready LRC sessions")
        s.faults["downlink_delay"] = 0.3
        with Client(t.apps, 30) as c:
            for d in devs:
                c.send("io.tpad.AS.SendDownlink", {"devEUI": d, "fPort": 1, "payload": ""})
            got = [c.recv() for _ in range(5)]
        s.faults["downlink_delay"] = 0
        self.assertEqual([g.get("error", "ok") for g in got], ["ok"] * 4 + ["io.tpad.AS.Busy"])
        self.assertEqual([g["parameters"]["fCntDn"] for g in got[:4]], [1, 1, 0, 0])
        with Client(t.apps) as c:  # the Busy one spent nothing
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": ""})
        self.assertEqual(r["fCntDn"], 2)
        self.assertEqual(s.state["violations"], [])

    def test_an_open_breaker_is_busy_and_spends_no_downlink_counter(self):
        """An LRC answering 503 opens the breaker after five: while it is open a downlink
        is Busy at once, before an FCntDn is taken (the LRC would not be asked), so the
        first one sent once it recovers uses the counter after the five it refused."""
        t, s = self.downlink_ready()
        s.faults["downlink_status"] = 503
        down = {"devEUI": DEV, "fPort": 1, "payload": ""}
        with Client(t.apps) as c:
            for i in range(5):
                with self.assertRaises(VarlinkError) as e:
                    c.call("io.tpad.AS.SendDownlink", down)
                self.assertEqual(e.exception.error, "io.tpad.AS.LrcFailed")
                self.assertEqual((e.exception.params["fCntDn"], e.exception.params["status"]),
                                 (i, 503))
            self.assertEqual(t.status()["lrc"]["breaker"], "open")
            for _ in range(50):
                with self.assertRaises(VarlinkError) as e:
                    c.call("io.tpad.AS.SendDownlink", down)
                self.assertEqual(e.exception.error, "io.tpad.AS.Busy")
            s.faults["downlink_status"] = None
            wait_for(lambda: t.status()["lrc"]["breaker"] != "open", 15, "the cool-down")
            r = c.call("io.tpad.AS.SendDownlink", down)
        self.assertEqual((r["fCntDn"], r["status"]), (5, 200))
        self.assertEqual(t.status()["downlinks"]["refused"], 50)
        self.assertEqual(s.state["violations"], [])

    def test_downlink_over_https_checks_the_certificate(self):
        """Downlinks reach the LRC over certificate TLS (core/tls): chain and host name."""
        ca, ca_key = self.self_signed("lrc-test-ca", cn="lrc-test-ca")
        other_ca, _ = self.self_signed("another-ca", cn="another-ca")
        key, csr, cert = (os.path.join(self.tmp, n) for n in ("lrc.key", "lrc.csr", "lrc.pem"))
        ext = os.path.join(self.tmp, "san.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:127.0.0.1\n")  # mbedTLS 2.28 matches names as text
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-keyout", key, "-out", csr], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                        "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert],
                       check=True, capture_output=True)
        s = self.lrc(None)
        s.port = s.start(tls=(cert, key))
        t = self.tpas(lrc_url=f"https://127.0.0.1:{s.port}", lrc_ca=ca).start()
        s.as_url = t.url
        astk = self.import_astk(t)
        s.add_device(DEV, astk)
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2,
                                                   "payload": b"tls".hex()})
        self.assertEqual(r["status"], 200)
        self.assertEqual(bytes.fromhex(s.state["downlinks"][-1]["payload"]), b"tls")
        # The same LRC checked against another CA: refused, and no downlink arrives. A
        # webhook to the same server and CA fails for the same reason, named as the
        # webhook's.
        t2 = self.tpas(lrc_url=f"https://127.0.0.1:{s.port}", lrc_ca=other_ca,
                       extra=f"[webhook]\nurl = https://127.0.0.1:{s.port}/hook\n"
                       f"ca-file = {other_ca}\n").start()
        s.as_url = t2.url
        self.import_astk(t2)
        n = len(s.state["downlinks"])
        s2 = self.lrc(t2)
        s2.add_device(DEV, self.astks[-1])
        self.assertEqual(s2.uplink(DEV, b"hi")[0], 200)
        # The refused certificate holds the breaker open: Busy, no FCntDn spent, and
        # Status names the failure.
        wait_for(lambda: t2.status()["lrc"]["certificate"], 20, "the certificate refused")
        self.assertEqual(t2.status()["lrc"]["certificate"]["error"], "unknown-ca")
        with Client(t2.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "00"})
        self.assertEqual(e.exception.error, "io.tpad.AS.Busy")
        self.assertEqual(len(s.state["downlinks"]), n)
        wait_for(lambda: t2.status()["webhook"]["lastError"], 20, "the webhook's failure")
        self.assertRegex(t2.status()["webhook"]["lastError"], r"^webhook .*unknown CA")
        self.assertNotIn("upstream", t2.status()["webhook"]["lastError"])

    def test_a_refusal_carries_the_lrcs_answer(self):
        """The LRC says why it refuses a downlink in its answer's body: LrcFailed carries it
        (answer, as SendDownlink's reply does), and tpactl as send shows it."""
        t, s = self.downlink_ready()
        s.faults["downlink_status"] = 400
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "00"})
        self.assertEqual(e.exception.error, "io.tpad.AS.LrcFailed")
        self.assertEqual(e.exception.params, {
            "devEUI": DEV, "fCntDn": 0, "status": 400, "reason": "LRC answered 400",
            "answer": "fault on demand"})
        p = t.tpactl("as", "send", "--dev-eui", DEV, "--port", "1", "--payload", "01")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("status=400, reason=LRC answered 400, answer=fault on demand", p.stderr)

    def test_a_long_answer_is_cut_not_failed(self):
        """An LRC answer over 64 KiB used to fail the downlink (LrcFailed, "HTTP response
        too large", although the LRC took it): its status counts, its text is cut to 64 KiB."""
        t, s = self.downlink_ready()
        s.faults["downlink_answer"] = "a" * 65000 + "\u00e9" * 1000
        with Client(t.apps) as c:
            r = c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "00"})
            self.assertEqual((r["fCntDn"], r["status"]), (0, 200))
            self.assertEqual(len(r["answer"].encode()), 65536)  # the last é whole
            s.faults["downlink_status"] = 400
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "01"})
        self.assertEqual(e.exception.error, "io.tpad.AS.LrcFailed")
        self.assertEqual(e.exception.params["status"], 400)
        self.assertTrue(e.exception.params["answer"].startswith("a" * 65000))
        self.assertEqual(t.status()["lrc"]["breaker"], "closed")

    def test_downlink_with_the_lrc_down(self):
        port = free_port()
        t = self.tpas(lrc_url=f"http://127.0.0.1:{port}").start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        s.add_device(DEV, astk)
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "00"})
        self.assertEqual(e.exception.error, "io.tpad.AS.LrcFailed")
        self.assertEqual(e.exception.params["status"], 0)
        self.assertNotIn("answer", e.exception.params)  # no answer came
        # tpactl as status says so by its exit status, as tpactl status does: 4 down,
        # 5 once the breaker opened; the human output shows the breaker.
        wait_for(lambda: t.status()["lrc"]["state"] == "down", 20, "the LRC down")
        if t.status()["lrc"]["breaker"] != "open":
            p = t.tpactl("as", "status", check=4)
            self.assertIn(f"lrc: http://127.0.0.1:{port} down, breaker ", p.stdout)
        wait_for(lambda: t.status()["lrc"]["breaker"] == "open", 30, "the breaker open")
        p = t.tpactl("as", "status", check=5)
        self.assertIn(f"lrc: http://127.0.0.1:{port} down, breaker open", p.stdout)
        # Each session's last error, where TpasLrcDown and TpasLrcBreakerOpen send the admin.
        self.assertRegex(p.stdout, r"\n  session 0: backoff .*, last error: connect to "
                         rf"127\.0\.0\.1:{port}: Connection refused\n")
        t.tpactl("--json", "as", "status", check=5)
        # The journal says it once, with why, and again when the LRC answers.
        opened = "LRC circuit breaker open: downlinks fail fast"
        wait_for(lambda: opened in t.log_text(), 5, "the breaker logged")
        self.assertIn("LRC circuit breaker open: downlinks fail fast (connect to "
                      f"127.0.0.1:{port}: Connection refused); tpactl as status shows each "
                      f"session UPSTREAM_URL=http://127.0.0.1:{port} REASON=", t.log_text())
        s.start(port)
        wait_for(lambda: t.status()["lrc"]["breaker"] == "closed", 30, "the breaker closed")
        wait_for(lambda: "LRC circuit breaker closed: the LRC answers again" in t.log_text(),
                 5, "the breaker closed in the log")
        self.assertEqual(t.log_text().count(opened), 1)
        # No LRC configured is healthy.
        self.tpas().start().tpactl("as", "status", check=0)

    def test_oneway_calls_sent_then_the_socket_closed_all_run(self):
        """An application sends ten oneway downlinks in one write and closes at once, more
        than limits.max-pending-calls lets run together: every one reaches the LRC (the
        hang-up is seen while the rest wait, unread; they still run, unanswered)."""
        s = self.lrc(None, serve=True)
        orig = s.handle_downlink

        def slow(target):
            time.sleep(0.4)
            return orig(target)
        s.handle_downlink = slow
        t = self.tpas(lrc_url=f"http://127.0.0.1:{s.port}",
                      extra="[limits]\nmax-pending-calls = 2\n").start()
        s.as_url = t.url
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"hi")[0], 200)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(t.apps)
        c.sendall(b"".join(json.dumps({"method": "io.tpad.AS.SendDownlink", "oneway": True,
                                       "parameters": {"devEUI": DEV, "fPort": 1 + i,
                                                      "payload": "%02x" % i}}).encode() + b"\0"
                           for i in range(10)))
        c.close()
        wait_for(lambda: len(s.state["downlinks"]) == 10, 20, "ten downlinks at the LRC")
        self.assertEqual(sorted(d["fport"] for d in s.state["downlinks"]), list(range(1, 11)))
        wait_for(lambda: t.status()["connections"]["apps"] == 0, 5, "the connection closed")

    def test_a_malformed_deveui_or_payload_says_what_is_in_the_way(self):
        """An application's SendDownlink with a DevEUI as a console shows it (dashes,
        colons) or a payload in base64 is InvalidParameter whose reason names the
        character in the way, as tpactl does: the rule alone did not say what to fix."""
        t = self.tpas().start()
        tail = ": give the digits alone, without 0x, spaces, dashes or colons"
        for params, parameter, reason in [
                ({"devEUI": "00-24-AE-B3-C0-2B-E1-C4", "payload": "01"}, "devEUI",
                 "must be 16 hexadecimal digits; character 3 is '-'" + tail),
                ({"devEUI": "00:24:AE:B3:C0:2B:E1:C4", "payload": "01"}, "devEUI",
                 "must be 16 hexadecimal digits; character 3 is ':'" + tail),
                ({"devEUI": DEV, "payload": "AQI="}, "payload",
                 "must be an even number (0 to 484) of hexadecimal digits; character 2 is "
                 "'Q'" + tail),
                ({"devEUI": DEV, "payload": "0x0384"}, "payload",
                 "must be an even number (0 to 484) of hexadecimal digits; character 2 is "
                 "'x'" + tail),
                ({"devEUI": DEV, "payload": "038"}, "payload",
                 "must be an even number (0 to 484) of hexadecimal digits")]:
            with self.subTest(params=params), Client(t.apps) as c:
                with self.assertRaises(VarlinkError) as e:
                    c.call("io.tpad.AS.SendDownlink", {"fPort": 2, **params})
                self.assertEqual(e.exception.error, "io.tpad.AS.InvalidParameter")
                self.assertEqual(e.exception.params,
                                 {"parameter": parameter, "reason": reason})

    def test_no_lrc_configured(self):
        t = self.tpas().start()
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 1, "payload": "00"})
        self.assertEqual(e.exception.error, "io.tpad.AS.NoLrc")


class OutOfMemoryCase(TpasCase):
    """Tests that run tpas with test/failalloc, an LD_PRELOAD library that fails the n-th
    allocation after it reads "FAILALLOC:<n>;" (skipped where it is not built)."""

    def setUp(self):
        super().setUp()
        if not failalloc_usable():
            self.skipTest("test/failalloc is not built with sanitizers (it replaces malloc)")

    def failing(self, t):
        """Restart t with failalloc."""
        t.stop()
        t.env["LD_PRELOAD"] = FAILALLOC
        t.start()


class DownlinkOutOfMemory(OutOfMemoryCase):
    """SendDownlink with one allocation of tpas failing, each in turn (test/failalloc, an
    LD_PRELOAD library that fails the n-th allocation after it reads "FAILALLOC:<n>;"). Busy
    ("nothing spent, retry") only when no FCntDn was taken; once one was, the answer names
    it (LrcFailed, or the reply, without the LRC's answer if that cannot be copied) or, if
    not even an answer can be encoded, the connection closes; a journal that fails for
    lack of memory says so, and which step."""

    def sweep(self, arm, disarm=lambda s: None):
        """A tpas running with failalloc, DEV known to it. For n = 1, 2, ... a SendDownlink,
        arm(s, n) returning its extra parameters, until allocation n is past the work it
        caused (failalloc logged no failure); each call followed by a plain one whose FCntDn
        says how many counters it spent. Checks what each answer says of the counters
        spent and the downlinks sent; returns the answers, (error or "ok", parameters)."""
        t, s = self.downlink_ready()
        self.failing(t)
        down = {"devEUI": DEV, "fPort": 1, "payload": ""}

        def call(params):
            with Client(t.apps, 15) as c:
                try:
                    return "ok", c.call("io.tpad.AS.SendDownlink", params)
                except VarlinkError as e:
                    return e.error, e.params
                except EOFError as e:  # closed: never a malformed reply (ValueError)
                    return "no answer", {"reason": str(e)}

        def probe():
            self.assertIsNone(t.proc.poll(), "tpas exited:\n" + t.log_text()[-2000:])
            k, r = call(down)
            self.assertEqual(k, "ok", r)
            return r["fCntDn"]
        last, out = probe(), []
        for n in range(1, 400):
            before, seen = len(s.state["downlinks"]), len(t.log_text())
            k, r = call({**down, **arm(s, n)})
            disarm(s)
            sent = len(s.state["downlinks"]) - before
            now = probe()
            spent, last = now - last - 1, now
            with self.subTest(allocation=n, answer=k, params=r, spent=spent, sent=sent):
                self.check(k, r, spent, sent, now - 1, s.state["downlinks"][before:])
            out.append((k, r))
            if not failalloc_failed(t.log_text()[seen:], n):
                break
        else:
            self.fail(f"allocations still failing at {n}")
        self.assertEqual(out[-1][0], "ok", out[-1])
        self.assertEqual(s.state["violations"], [])
        return t, out

    def check(self, k, r, spent, sent, fcnt, downlinks):
        """One answer against the counters its call spent and the downlinks it sent (fcnt:
        the counter it took, if any)."""
        if k == "io.tpad.AS.Busy":
            self.assertEqual((spent, sent), (0, 0))
        elif k == "ok":
            self.assertEqual((spent, sent), (1, 1))
            self.assertEqual(r["fCntDn"], fcnt)
            self.assertEqual(downlinks[0]["fcnt_dn"], fcnt)
        elif k == "io.tpad.AS.LrcFailed":
            self.assertEqual((spent, r["fCntDn"], r["status"]), (1, fcnt, 0))
            if not sent:
                self.assertEqual(r["reason"], "not sent, its FCntDn spent: Cannot allocate memory")
        elif k == "io.tpad.AS.StoreFailed":
            self.assertEqual((spent, sent), (0, 0))
            self.assertRegex(r["reason"], r"^cannot (read the device's session|commit the "
                             r"downlink counter): Cannot allocate memory$")
        elif k.startswith("org.varlink.service."):  # the call itself could not be read
            self.assertEqual((spent, sent), (0, 0))
        else:
            # A reply that could not be built whole (or an error not even encoded): the
            # connection closes.
            self.assertEqual(k, "no answer")

    def test_out_of_memory_before_the_send(self):
        """From the call's bytes read to its counter queued for the journal's writer
        thread: Busy before a counter is taken, StoreFailed naming the step the journal
        failed at for lack of memory. (The counter is committed by the writer thread and
        the POST queued when the loop hears of it: the next test fails those allocations.)"""
        t, out = self.sweep(lambda s, n: {"unused": f"FAILALLOC:{n};"})
        kinds = {k if k != "io.tpad.AS.StoreFailed" else r["reason"].split(":")[0]
                 for k, r in out}
        self.assertLessEqual({"io.tpad.AS.Busy", "cannot read the device's session"}, kinds,
                             out)

    def test_out_of_memory_once_the_counter_is_taken(self):
        """A downlink held behind the device's earlier one, its counter committed, goes to
        the pool when the LRC answers the earlier one: with each allocation of that work
        failing in turn (the marker in the LRC's answer to the first), the held one is sent
        (200, its counter) or answered LrcFailed naming its counter, "not sent, its FCntDn
        spent" (or not at all, when a reply is not trusted whole); never Busy, and no
        counter sent twice or out of order."""
        t, s = self.downlink_ready()
        self.failing(t)
        orig = s.handle_downlink
        state = {"n": 0, "first": None}
        first_in = threading.Event()

        def lrc(target):
            first = state["first"] is None
            if first:
                state["first"] = target
                first_in.set()
                time.sleep(0.3)  # the second is taken and held meanwhile
            status, text = orig(target)
            return status, (f"FAILALLOC:{state['n']}; queued" if first else text)
        s.handle_downlink = lrc

        def call(payload, out):
            with Client(t.apps, 15) as c:
                try:
                    out[payload] = ("ok", c.call("io.tpad.AS.SendDownlink",
                                                 {"devEUI": DEV, "fPort": 1, "payload": payload}))
                except VarlinkError as e:
                    out[payload] = (e.error, e.params)
                except EOFError as e:
                    out[payload] = ("no answer", {"reason": str(e)})
        kinds = set()
        for n in range(1, 200):
            state.update(n=n, first=None)
            first_in.clear()
            before, seen = len(s.state["downlinks"]), len(t.log_text())
            out = {}
            a = threading.Thread(target=call, args=("01", out))
            a.start()
            self.assertTrue(first_in.wait(10), "the first downlink at the LRC")
            call("02", out)
            a.join(15)
            self.assertIsNone(t.proc.poll(), "tpas exited:\n" + t.log_text()[-2000:])
            sent = s.state["downlinks"][before:]
            k, r = out["02"]
            with self.subTest(allocation=n, answer=k, params=r, sent=sent):
                self.assertIn(out["01"][0], ("ok", "no answer"), out)
                self.assertEqual(sent[0]["payload"], "01")
                if k == "ok":
                    self.assertEqual([d["payload"] for d in sent], ["01", "02"])
                    self.assertEqual(r["fCntDn"], sent[1]["fcnt_dn"])
                elif k == "no answer":
                    # An allocation of jansson's or libevent's failed since the server last
                    # looked (the first's reply): a reply is then not trusted whole, and
                    # the connection closes (core/server.c, alloc_failed()).
                    self.assertIn(len(sent), (1, 2))
                else:
                    self.assertEqual(k, "io.tpad.AS.LrcFailed")
                    self.assertEqual(len(sent), 1)
                    self.assertEqual(r["fCntDn"], sent[0]["fcnt_dn"] + 1)
                    self.assertEqual(r["reason"],
                                     "not sent, its FCntDn spent: Cannot allocate memory")
            kinds.add(k)
            if not failalloc_failed(t.log_text()[seen:], n):
                break
        else:
            self.fail(f"allocations still failing at {n}")
        self.assertLessEqual({"ok", "io.tpad.AS.LrcFailed"}, kinds)
        self.assertIn("not sent, its FCntDn spent", t.log_text())
        self.assertEqual(s.state["violations"], [])

    def test_out_of_memory_after_the_send_is_never_busy(self):
        """From the LRC's answer read to the call answered: the downlink was sent, so the
        call is answered with its FCntDn (the LRC's answer left out, and logged, when it
        cannot be copied), or not at all; never Busy."""

        def arm(s, n):
            s.faults["downlink_answer"] = f"FAILALLOC:{n}; queued"
            return {}

        def disarm(s):
            s.faults["downlink_answer"] = None
        t, out = self.sweep(arm, disarm)
        self.assertIn(("ok", ""), [(k, r.get("answer")) for k, r in out], out)
        self.assertIn("out of memory for the LRC's answer, answered without it", t.log_text())


class RepliesOutOfMemory(OutOfMemoryCase):
    """Every method that reads or reports, with each allocation of tpas failing in turn
    (test/failalloc): a reply is whole (it fits its declared type and has every key the
    reply with nothing failing has; a stream's uplinks are the same ones, none skipped) or
    is not sent (an error, or the connection closes). jansson leaves out a key it cannot
    add, and a json_pack that fails gives no object at all: tpas must not send either."""

    def test_every_reply_is_whole_or_not_sent(self):
        t, s = self.downlink_ready()
        s.uplink(DEV, b"two")
        s.uplink(DEV, b"three")
        self.failing(t)

        def alive():
            self.assertIsNone(t.proc.poll(), "tpas exited:\n" + t.log_text()[-2000:])
        swept = check_whole_under_failures(self, t.apps, [
            ("io.tpad.AS.Uplinks", {"follow": False}, True),
            ("io.tpad.AS.Uplinks", {"after": 1, "follow": False}, True),
            ("io.tpad.AS.Status", {}, False),
            ("org.varlink.service.GetInfo", {}, False),
            ("org.varlink.service.GetInterfaceDescription", {"interface": "io.tpad.AS"}, False),
        ], t.log_text, alive)
        swept.update(check_whole_under_failures(self, t.admin, [
            ("io.tpad.ASAdmin.ListASTKs", {}, False),
        ], t.log_text, alive))
        print(f"allocations swept: {swept}", file=sys.stderr)
        self.assertGreater(min(swept.values()), 10, swept)
        self.assertEqual([u["fCntUp"] for u in t.uplinks()], [0, 1, 2])

    def test_a_metrics_scrape_never_tells_a_value_it_could_not_read(self):
        """/metrics with each allocation failing while a scrape is served: whatever is
        answered 200 is a whole exposition, and tpas_journal_first_seq, read from the
        journal, is either the true one or left out (not 0: "nothing kept")."""
        mport = free_port()
        t, s = self.downlink_ready(extra=f"[metrics]\nlisten = 127.0.0.1:{mport}\n")
        self.failing(t)
        left_out = 0
        for n in range(1, 1000):
            seen = len(t.log_text())
            with socket.create_connection(("127.0.0.1", mport), timeout=10) as c:
                c.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Test: FAILALLOC:{n};\r\n"
                          "Connection: close\r\n\r\n".encode())
                got = read_all(c)
            self.assertIsNone(t.proc.poll(), "tpas exited")
            head, _, body = got.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200"):
                with self.subTest(allocation=n):
                    _, v = parse(body.decode(), openmetrics=False)
                    if "tpas_journal_first_seq" in v:
                        self.assertEqual(v["tpas_journal_first_seq"], 1)
                    else:
                        left_out += 1
            if not failalloc_failed(t.log_text()[seen:], n):
                break
        self.assertGreater(n, 10)
        print(f"allocations swept: {n - 1}, first seq left out {left_out} times",
              file=sys.stderr)

class UplinksOutOfMemory(OutOfMemoryCase):
    """The LRC's POST with each allocation of tpas failing in turn (test/failalloc), for a
    body of each reader (the one-pass reader, jansson, libxml2): answered 200 with the
    uplink journaled whole, or 503 (or, when not even that can be written, the connection
    closed) so that the LRC retries; never 400 (the LRC would drop the uplink), never
    journaled with a field missing or a character lost, never twice."""

    def test_each_uplink_is_journaled_whole_or_answered_503(self):
        s, t = self.served_lrc()
        self.sweep(s, t)

    def test_over_tls_each_uplink_is_journaled_whole_or_answered_503(self):
        """The same through the tunnel's own TLS: the marker is in what mbedTLS decrypts, so
        the allocations swept begin with the plaintext's way into the HTTP server, where a
        failure closes the connection and the LRC retries (had the request lost those bytes,
        it would wait for the rest until tunnel.timeout and be answered 408)."""
        cert, key = self.self_signed("tunnel")
        s = self.lrc(None, serve=True)
        t = self.tpas(lrc_url=f"http://127.0.0.1:{s.port}")
        self.tunnel_conf(t, f"tls-cert-file = {cert}\ntls-key-file = {key}\n")
        t.start()
        s.as_url = f"https://127.0.0.1:{t.port}"
        s.cafile = cert
        self.sweep(s, t)

    def sweep(self, s, t):
        """For each body kind, the n-th allocation after tpas reads the marker failing, n = 1,
        2, ... until none fails; then every uplink sent is journaled once and whole."""
        s.add_device(DEV, self.import_astk(t))
        self.failing(t)
        sent = {}  # fCntUp -> (payload, the radio fields each POST of it carried)
        bodies = [("json", {}), ("json", {"note": "caf\u00e9 \\ \"q\""}), ("xml", {})]
        swept = []
        for fmt, note in bodies:
            failed = 0
            for n in range(1, 2000):
                fcnt = s.state["devices"][DEV]["fcnt_up"]
                payload = f"uplink {fcnt}".encode()
                seen = len(t.log_text())
                extra = {"CustomerData": {"alr": {"pro": "LORA/Generic", "ver": "1"},
                                          "tags": f"FAILALLOC:{n};", **note}}
                try:
                    status, ans = s.uplink(DEV, payload, fmt=fmt, extra=extra)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        ssl.SSLError) as e:
                    status, ans = None, str(e)  # not even a 503 could be sent
                radios = [extra["CustomerData"]]
                with self.subTest(fmt=fmt, allocation=n, status=status, answer=ans):
                    self.assertIn(status, (200, 503, None))
                if status != 200:  # the LRC retries the same uplink
                    extra = {"CustomerData": {"alr": {"pro": "LORA/Generic", "ver": "1"},
                                              "tags": "retry", **note}}
                    status, ans = s.uplink(DEV, payload, fmt=fmt, extra=extra)
                    self.assertEqual(status, 200, ans)
                    radios.append(extra["CustomerData"])
                sent[fcnt] = (payload.hex().upper(), radios)
                if not failalloc_failed(t.log_text()[seen:], n):
                    break
                failed += 1
            swept.append(failed)
        print(f"allocations swept: {swept}", file=sys.stderr)
        self.assertGreater(min(swept), 2, swept)
        t.env.pop("LD_PRELOAD")
        t.stop()
        t.start()
        got = t.uplinks()
        self.assertEqual([u["fCntUp"] for u in got], sorted(sent))
        for u in got:
            payload, radios = sent[u["fCntUp"]]
            self.assertEqual(u["payload"], payload, u)
            self.assertIn(u["radio"].get("CustomerData"), radios, u)

def thread_names(pid):
    """The names of a process's threads, as top -H and /proc/PID/task/*/comm show them."""
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)


def python_example_app():
    return [sys.executable, EXAMPLE_APP]


def c_example_app():
    return [os.environ["EXAMPLE_APP_C"]]


class ExampleAppCases:
    """The example application an AS developer starts from, run as command(): each
    TpasCase below runs these tests against one of the examples."""

    command = None

    def setUp(self):
        super().setUp()
        self.app_errs = []

    def tearDown(self):
        # A sanitizer's report (the C example under ASan) fails the test.
        reports = [r for r in map(tpadtest.sanitizer_report, self.app_errs) if r]
        super().tearDown()
        self.assertEqual(reports, [])

    def start_app(self, t, state=None, command=None):
        """The example on t's apps socket, its output under tmp: (process, stdout, stderr)."""
        out, err = os.path.join(self.tmp, "app.out"), os.path.join(self.tmp, "app.err")
        with open(out, "ab") as o, open(err, "ab") as e:
            p = subprocess.Popen([*(command or self.command()), "--socket", t.apps, "--state",
                                  state or os.path.join(self.tmp, "app.seq"), "--interval",
                                  "900", "--retry-max", "0.4"], stdout=o, stderr=e)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        self.app_errs.append(err)
        return p, out, err

    def seen(self, out):
        """The seqs of the uplink lines printed so far, and the lines."""
        lines = pathlib.Path(out).read_text().splitlines()
        return [int(line.split()[1]) for line in lines if line.startswith("uplink ")], lines

    def wait_seq(self, out, seq, what):
        wait_for(lambda: seq in self.seen(out)[0], 10, what)

    def test_help(self):
        """--help prints the options and exits 0, in either example ("the same options")."""
        p = subprocess.run([*self.command(), "--help"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        for option in ("--socket", "--state", "--interval", "--retry-max"):
            self.assertIn(option, p.stdout)

    def test_follows_answers_resumes_after_kill9_and_reconnects(self):
        t, s = self.downlink_ready()  # seq 1: "hi" on FPort 1
        state = os.path.join(self.tmp, "app.seq")
        app, out, err = self.start_app(t)
        self.assertEqual(s.uplink(DEV, struct.pack(">hB", 215, 48))[0], 200)
        self.assertEqual(s.uplink(DEV, b"?", fport=2)[0], 200)  # asks for its configuration
        wait_for(lambda: any(x.startswith("downlink ") for x in self.seen(out)[1]), 10,
                 "the answer to seq 3")
        _, lines = self.seen(out)
        self.assertEqual(lines[:3], [
            f"uplink 1 {DEV} fCntUp 0 fPort 1: payload 6869",
            f"uplink 2 {DEV} fCntUp 1 fPort 1: temperature 21.5 C, humidity 48 %",
            f"uplink 3 {DEV} fCntUp 2 fPort 2: asks for its configuration"])
        self.assertEqual(lines[3], f'downlink {DEV} fPort 2 interval 900 s: FCntDn 0, '
                         f'LRC 200 "Request queued by LRC"')
        d = s.state["downlinks"][-1]  # its Token checked, its payload decrypted
        self.assertEqual((d["dev_eui"], d["fport"], d["payload"]), (DEV, 2, "0384"))
        self.assertEqual(s.state["violations"], [])
        # kill -9 mid-stream: stopped while three uplinks wait in its stream, unread.
        wait_for(lambda: pathlib.Path(state).read_text() == "3\n", 10, "seq 3 saved")
        app.send_signal(signal.SIGSTOP)
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"k%d" % i)[0], 200)
        wait_for(lambda: t.status()["journal"]["lastSeq"] == 6, 10, "seq 6")
        app.kill()
        app.wait()
        self.assertEqual(s.uplink(DEV, b"k3")[0], 200)  # while it is away
        app, out, err = self.start_app(t)
        self.wait_seq(out, 7, "the uplinks missed while killed")
        self.assertEqual(s.uplink(DEV, b"k4")[0], 200)  # live again
        self.wait_seq(out, 8, "a live uplink after the restart")
        # tpas restarts under it, stopped then killed: the application tries again until
        # it is back.
        for stop, said in ((t.stop, "tpas ended the stream (it is stopping)"),
                           (t.kill9, "tpas closed the connection during io.tpad.AS.Uplinks")):
            stop()
            wait_for(lambda: "tpas is not running" in pathlib.Path(err).read_text() or
                     "is tpas running?" in pathlib.Path(err).read_text(), 10, "a retry")
            self.assertIn(said, pathlib.Path(err).read_text())
            pathlib.Path(err).write_text("")
            t.start()
            self.assertEqual(s.uplink(DEV, b"k%d" % (5 + (stop == t.kill9)))[0], 200)
            self.wait_seq(out, 9 + (stop == t.kill9), "an uplink after tpas's restart")
        seqs, lines = self.seen(out)
        self.assertEqual(seqs, list(range(1, 11)))  # each once, in order
        self.assertEqual([x.split(": ", 1)[1] for x in lines if x.startswith("uplink ")][3:],
                         ["payload " + (b"k%d" % i).hex().upper() for i in range(7)])
        # SIGTERM: a clean exit, its place kept.
        wait_for(lambda: pathlib.Path(state).read_text() == "10\n", 10, "seq 10 saved")
        app.terminate()
        self.assertEqual(app.wait(10), 0)
        # Away longer than store.retention-days: what it missed is named, then skipped.
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"p%d" % i)[0], 200)
        self.prune(t, s, 12, 12)
        app, out, err = self.start_app(t)
        self.wait_seq(out, 13, "the uplink kept")
        self.assertIn("missed uplinks 11 to 12: tpas removed them (store.retention-days)",
                      pathlib.Path(err).read_text())
        self.assertEqual(self.seen(out)[0], list(range(1, 11)) + [13])
        app.terminate()
        self.assertEqual(app.wait(10), 0)
        # A saved seq past tpas's newest (its store put back from a backup): said, exit 1.
        pathlib.Path(state).write_text("99\n")
        app, out, err = self.start_app(t)
        self.assertEqual(app.wait(10), 1)
        self.assertIn("tpas refuses to resume after seq 99: 99 is past the journal's "
                      "lastSeq 13", pathlib.Path(err).read_text())

    def test_tpas_gone_during_a_downlink_the_uplink_comes_again(self):
        """tpas killed while the answer to an uplink waits on a slow LRC: the seq is not
        saved, so after the restart the uplink is processed again and answered again, with
        the next FCntDn (the first downlink may well have reached the LRC)."""
        t, s = self.downlink_ready()
        app, out, err = self.start_app(t)
        s.faults["downlink_delay"] = 1
        self.assertEqual(s.uplink(DEV, b"?", fport=2)[0], 200)
        self.wait_seq(out, 2, "the configuration request")
        # Killed once the downlink waits at the LRC, not before tpas has read it.
        wait_for(lambda: any(x["state"] == "busy" for x in t.status()["lrc"]["sessions"]), 10,
                 "the downlink at the LRC")
        t.kill9()
        wait_for(lambda: "tpas closed the connection during io.tpad.AS.SendDownlink" in
                 pathlib.Path(err).read_text(), 10, "the downlink cut")
        s.faults["downlink_delay"] = 0
        t.start()
        wait_for(lambda: sum(x.startswith("downlink ") for x in self.seen(out)[1]) == 1, 10,
                 "the answer sent again")
        self.assertEqual(self.seen(out)[0], [1, 2, 2])
        self.assertIn("FCntDn 1, LRC 200", self.seen(out)[1][-1])
        wait_for(lambda: len(s.state["downlinks"]) == 2, 10, "both downlinks at the LRC")
        self.assertEqual(sorted(d["fcnt_dn"] for d in s.state["downlinks"]), [0, 1])
        # The first, cut by tpas's death while the LRC held it, may reach the LRC's queue
        # after the one sent again: no tpas can order that one, and the device then drops
        # it, so it takes the configuration once.
        self.assertIn(s.state["violations"],
                      ([], [{"fcnt_behind": 0, "after": 1, "dev_eui": DEV}]))


class ExampleApp(ExampleAppCases, TpasCase):
    """client/python/example_app.py."""

    command = staticmethod(python_example_app)


class ExampleAppC(ExampleAppCases, TpasCase):
    """client/example_app.c on libtpad-client (EXAMPLE_APP_C, built beside it)."""

    command = staticmethod(c_example_app)

    def test_each_example_resumes_from_the_others_seq_file(self):
        """One seq file format: an application moved from one example to the other
        (Python to C and back) goes on after the last uplink the other processed."""
        t, s = self.downlink_ready()  # seq 1
        for n, command in enumerate([python_example_app(), c_example_app(),
                                     python_example_app()]):
            app, out, err = self.start_app(t, command=command)
            self.assertEqual(s.uplink(DEV, b"r%d" % n)[0], 200)
            self.wait_seq(out, n + 2, f"seq {n + 2}")
            wait_for(lambda: pathlib.Path(self.tmp, "app.seq").read_text() == f"{n + 2}\n",
                     10, f"seq {n + 2} saved")
            app.terminate()
            self.assertEqual(app.wait(10), 0)
        self.assertEqual(self.seen(out)[0], [1, 2, 3, 4])


class Signals(TpasCase):
    def test_the_journal_writer_thread_has_a_name(self):
        """An admin looking at top -H sees which thread of tpas is busy."""
        t = self.tpas().start()
        self.assertEqual(thread_names(t.proc.pid), ["sqlwriter", "tpas"])

    def test_sigterm_answers_a_downlink_the_lrc_never_answers(self):
        """SIGTERM waits for downlinks in flight, 15 s at most: one the LRC has not
        answered after 14 s (an lrc.request-timeout above that) is answered LrcFailed, its
        FCntDn spent, and logged, before tpas exits 0. The caller's connection used to be
        closed without a reply (and, under ASan, the call leaked)."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        conns, taken = [], []  # taken: the requests read (the pool connects at start)

        def read_one(c):
            try:
                data = c.recv(65536)
                if data:
                    taken.append(data)
            except OSError:
                pass

        def silent_lrc():  # reads each request, never answers
            try:
                while True:
                    c, _ = srv.accept()
                    conns.append(c)
                    threading.Thread(target=read_one, args=(c,), daemon=True).start()
            except OSError:
                pass
        threading.Thread(target=silent_lrc, daemon=True).start()
        self.addCleanup(srv.close)
        t = self.tpas(lrc_url=f"http://127.0.0.1:{srv.getsockname()[1]}")
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(conf.replace("request-timeout = 5s", "request-timeout = 45s"))
        t.start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"up")[0], 200)
        app = Client(t.apps, timeout=60)
        self.addCleanup(app.close)
        other = Client(t.apps, timeout=60)
        self.addCleanup(other.close)
        app.send("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "01"})
        wait_for(lambda: any(b"/downlink" in d for d in taken), 10,
                 "the LRC to take the downlink")
        t0 = time.monotonic()
        t.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "finishing calls in flight" in t.log_text(), 5, "tpas to stop")
        # A call sent meanwhile is not carried out: Busy, in call order, at once.
        app.send("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "02"})
        other.send("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "03"})
        self.assertEqual(other.recv().get("error"), "io.tpad.AS.Busy")
        self.assertLess(time.monotonic() - t0, 5)
        reply = app.recv()
        self.assertEqual(reply.get("error"), "io.tpad.AS.LrcFailed", reply)
        self.assertEqual(reply["parameters"]["fCntDn"], 0)
        self.assertIn("tpas stopped before the LRC answered", reply["parameters"]["reason"])
        self.assertEqual(app.recv().get("error"), "io.tpad.AS.Busy")
        self.assertEqual(sum(d.count(b"/downlink") for d in taken), 1)
        self.assertEqual(t.proc.wait(30), 0)
        self.assertLess(time.monotonic() - t0, 16)
        t.proc = None
        t.log.close()
        self.assertRegex(t.log_text(), f"downlink to {DEV} FCntDn 0: .*tpas stopped before")

    def test_sighup_reloads_the_limits_and_cuts_nothing(self):
        """SIGHUP (systemctl reload tpas, logrotate) killed tpas at once: it re-reads the
        file, applies limits.* and names what waits for a restart; a bad file changes
        nothing; a stream in flight goes on."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"one")[0], 200)
        app = Client(t.apps)
        app.send("io.tpad.AS.Uplinks", {"after": 0}, more=True)
        self.assertEqual(bytes.fromhex(app.recv()["parameters"]["uplink"]["payload"]), b"one")
        with open(t.conf, "a") as f:
            f.write("[limits]\nmax-message = 1K\n")
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(conf.replace("as-id = tpas-test", "as-id = tpas-other"))
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in t.log_text(), 10, "the reload")
        self.assertIn("reloaded: limits applied", t.log_text())
        self.assertIn("tunnel.as-id changed; it takes effect at the next start", t.log_text())
        # The new limit holds for the next message; the stream is still served.
        with Client(t.apps) as c:
            with self.assertRaises((EOFError, OSError)):  # over max-message: closed
                c.call("io.tpad.AS.Status", {"pad": "x" * 2000})
        self.assertEqual(s.uplink(DEV, b"two")[0], 200)
        self.assertEqual(bytes.fromhex(app.recv()["parameters"]["uplink"]["payload"]), b"two")
        # A file that parses but that --check-config (and so a start) refuses: a
        # certificate that is not there. Taken, tpas would not come back at its restart.
        with open(t.conf) as f:
            good = f.read()
        missing = os.path.join(self.tmp, "no-such-cert.pem")
        with open(t.conf, "w") as f:
            f.write(good.replace("[tunnel]\n", f"[tunnel]\ntls-cert-file = {missing}\n", 1))
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: keeping the running configuration: tpas --check-config "
                 "refuses" in t.log_text(), 10, "the reload of a missing certificate")
        self.assertIn(f"{missing}: No such file or directory", t.log_text())
        self.assertNotIn("tunnel.tls-cert-file changed", t.log_text())
        with open(t.conf, "w") as f:
            f.write(good)
        with open(t.conf, "a") as f:
            f.write("[limits]\nmax-message = lots\n")
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "max-message" in t.log_text().split(
            "SIGHUP: keeping the running configuration")[-1], 10, "the refused reload")
        self.assertIsNone(t.proc.poll())
        app.close()
        self.assertEqual(t.stop(), 0)

    def test_apps_clients_cannot_lock_the_admin_out(self):
        """Apps clients of any number of users together get at most limits.max-clients less
        the slots kept for the admin socket, and are refused with the AS interface's Busy."""
        t = self.tpas(extra="[limits]\nmax-clients = 16\nmax-clients-per-uid = 16\n"
                             "max-clients-per-process = 16\n").start()
        apps = []
        for _ in range(16):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(t.apps)
            apps.append(c)
        busy = 0
        for c in apps:
            c.settimeout(0.5)
            try:
                if b"io.tpad.AS.Busy" in c.recv(4096):
                    busy += 1
            except socket.timeout:
                pass
        self.assertEqual(busy, 2)  # 16 less the 2 kept for the admin
        admins = [Client(t.admin), Client(t.admin)]  # both slots kept for the admin
        for a in admins:
            self.assertIn("tunnel", a.call("io.tpad.AS.Status"))
            a.close()
        self.assertIn("kept for the admin socket", t.log_text())
        for c in apps:
            c.close()


class Commands(TpasCase):
    def test_no_core_files(self):
        """A core file of tpas would hold the store key, the tunnel key and AppSKeys: tpas
        turns core files off at start, even when started with them on."""
        with tpadtest.CoresAllowed(self):
            t = self.tpas().start()
        self.assertEqual(tpadtest.core_limits(t.proc.pid), ("0", "0"))

    def test_not_dumpable(self):
        """Nor a core through a core_pattern pipe: tpas marks itself not dumpable, as tpad
        does (test_foundation.Foundation.test_not_dumpable), run here as its own user."""
        if os.getuid() != 0:
            self.skipTest("needs root to start tpas as another user")
        rsa = os.path.join(self.tmp, "as-rsa.pem")
        shutil.copy(self.rsa_key, rsa)
        workdir = os.path.join(self.tmp, "tpas0")
        os.makedirs(workdir)
        t = Tpas(workdir, rsa)
        self.procs.append(t)
        t.start(preexec_fn=tpadtest.as_nobody(self.tmp))
        for f in ("environ", "mem"):
            self.assertEqual(os.stat(f"/proc/{t.proc.pid}/{f}").st_uid, 0, f)

    def test_a_follow_cut_by_tpas_names_tpas(self):
        """tpas killed under `tpactl as uplinks --follow`: the message names tpas and its
        log, not tpad's."""
        t = self.tpas().start()
        p = subprocess.Popen([TPACTL, "--socket", t.admin, "as", "uplinks", "--follow"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: t.status()["subscribers"] >= 1, 10, "the follower")
        t.kill9()
        _, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("tpas closed the connection (see its log: journalctl -u tpas)", err)
        self.assertNotIn("tpad", err)

    def test_a_stream_that_fails_after_connecting_exits_1(self):
        """tpactl(1): 3 is for a socket it cannot connect to; a malformed reply or a link
        that fails mid-stream, once connected, is 1."""
        path = os.path.join(self.tmp, "fake.sock")

        def serve(reply):
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(path)
            srv.listen(1)

            def one():
                c, _ = srv.accept()
                with c:
                    c.recv(4096)
                    c.sendall(reply)
                srv.close()
                os.unlink(path)
            th = threading.Thread(target=one, daemon=True)
            th.start()
            return th
        one_uplink = json.dumps({"parameters": {"uplink": {
            "seq": 7, "receivedAt": "2026-01-01T00:00:00.000+00:00", "devEUI": DEV,
            "customerID": "", "devAddr": "", "fCntUp": 1, "time": "", "payload": "",
            "encrypted": False, "radio": {}}}, "continues": True}).encode() + b"\0"
        for reply, said in [(b"{not json\0", "tpas sent a malformed reply"),
                            (one_uplink, "tpas closed the connection")]:
            th = serve(reply)
            p = subprocess.run([TPACTL, "--socket", path, "as", "uplinks", "--follow"],
                               capture_output=True, text=True, timeout=20)
            th.join(10)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(said, p.stderr)
        p = subprocess.run([TPACTL, "--socket", path, "as", "uplinks"], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 3, p.stderr)

    def test_each_as_command_has_its_own_help(self):
        """tpactl as COMMAND --help (and tpactl help as COMMAND) print that command's usage
        and options and exit 0 without a tpas; tpactl as --help lists them all."""
        env = dict(os.environ, TPAS_SOCKET=os.path.join(self.tmp, "none.sock"))
        for cmd, want in (("keygen", "--out FILE"), ("import-astk", "--customer-id ID"),
                          ("astks", "never the keys"), ("uplinks", "--follow"),
                          ("send", "--payload HEX"), ("status", "exit 4 LRC")):
            for args in (["as", cmd, "--help"], ["help", "as", cmd], ["as", "-h", cmd]):
                with self.subTest(args=args):
                    p = subprocess.run([TPACTL, *args], capture_output=True, text=True,
                                       env=env, timeout=30)
                    self.assertEqual((p.returncode, p.stderr), (0, ""))
                    self.assertTrue(p.stdout.startswith(f"Usage: tpactl as {cmd}"), p.stdout)
                    self.assertIn(want, p.stdout)
                    self.assertIn("Common options: --socket PATH", p.stdout)
        for args in (["as", "--help"], ["help", "as"]):
            p = subprocess.run([TPACTL, *args], capture_output=True, text=True, env=env,
                               timeout=30)
            self.assertEqual(p.returncode, 0)
            for cmd in ("keygen", "import-astk", "astks", "uplinks", "send", "status"):
                self.assertIn(f"  {cmd}", p.stdout)
        p = subprocess.run([TPACTL, "as", "sned", "--help"], capture_output=True, text=True,
                           env=env, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("Did you mean 'tpactl as send'?", p.stderr)

    def test_keygen(self):
        out = os.path.join(self.tmp, "k.pem")
        p = subprocess.run([TPACTL, "as", "keygen", "--out", out], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("-----BEGIN PUBLIC KEY-----"))
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        with open(out) as f:
            self.assertIn("PRIVATE KEY", f.read())
        # Never over an existing key.
        p = subprocess.run([TPACTL, "as", "keygen", "--out", out], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 1)
        self.assertIn("File exists", p.stderr)
        # Why, and what to do for a new pair; not "remove it", which loses the key the
        # imported ASTKs need.
        self.assertIn("a key is never overwritten", p.stderr)
        self.assertIn("move it away first", p.stderr)
        self.assertNotIn("remove it", p.stderr)
        with open(out) as f:
            self.assertIn("PRIVATE KEY", f.read())
        p = subprocess.run([TPACTL, "as", "keygen"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        # A directory is not an existing key: say what --out wants.
        for d in (self.tmp, self.tmp + "/"):
            p = subprocess.run([TPACTL, "as", "keygen", "--out", d], capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"{d}: Is a directory: --out names the private key's file, such "
                          f"as {self.tmp}/as-rsa-key.pem", p.stderr)
            self.assertNotIn("never overwritten", p.stderr)
            self.assertEqual(p.stdout, "")

    def test_a_typo_in_the_config_names_the_directive_meant(self):
        t = self.tpas()
        with open(t.conf) as f:
            conf = f.read()
        with open(t.conf, "w") as f:
            f.write(conf.replace("[tunnel]\n", "[tunel]\n", 1))
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(":2: unknown directive 'tunel.listen' (did you mean 'tunnel.listen'?)",
                      p.stderr)

    def test_a_file_in_a_sockets_place_is_named_at_its_line(self):
        """A file where apps.socket is to be bound: --check-config and the start both name
        the directive and its line (not "Address already in use") and leave the file."""
        t = self.tpas()
        victim = os.path.join(self.tmp, "notes.txt")
        with open(victim, "w") as f:
            f.write("precious\n")
        with open(t.conf) as f:
            lines = f.read().splitlines()
        section, line = None, None
        for i, l in enumerate(lines):
            section = l if l.startswith("[") else section
            if section == "[apps]" and l.startswith("socket = "):
                lines[i], line = f"socket = {victim}", i + 1
        self.assertIsNotNone(line)
        with open(t.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.refused(t.conf, f"{t.conf}:{line}: apps.socket: {victim} exists and is not a "
                     "socket: move it away", absent=["Address already in use"])
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_a_store_key_of_the_wrong_form_is_named_as_such(self):
        """A store key that is not 64 hexadecimal digits stops tpas (and --check-config)
        saying what is wrong with it, not that the file is not a regular one."""
        t = self.tpas()
        for text, want in (("abcd", "it must be 64 hexadecimal digits, not 4"),
                           ("0x" + "ab" * 32, f"{t.store_key_file} does not hold hexadecimal "
                            "digits (an even number of them, nothing else)"),
                           ("a" * 63, "does not hold hexadecimal digits")):
            write_secret(t.store_key_file, text)
            with self.subTest(key=text[:8]):
                self.refused(t.conf, want, absent=["regular file"])

    def test_a_secret_written_in_its_file_directive_is_not_echoed(self):
        """The tunnel key or the store key where its file's path belongs: refused without
        writing the key to the journal."""
        t = self.tpas()
        with open(t.conf) as f:
            conf = f.read()
        # The tunnel key may be any text: one in base64 can begin with a slash.
        slashed = "/" + base64.b64encode(os.urandom(24)).decode()
        for path, name, key in ((t.key_file, "tunnel-key", TUNNEL_KEY),
                                (t.store_key_file, "store-key", t.store_key),
                                (t.key_file, "tunnel-key", slashed)):
            with open(t.conf, "w") as f:
                f.write(conf.replace(f"key-file = {path}\n", f"key-file = {key}\n"))
            with self.subTest(name=name):
                self.refused(t.conf, f"the file directive of credential {name} names no file",
                             absent=[key])

    def test_keys_others_can_read_are_refused_with_the_fix(self):
        """The tunnel key, the store key and the RSA key: a file others can read stops tpas
        (and --check-config) with the command that fixes it, and so does an RSA key file
        that holds no RSA private key; an empty one is no key yet (ImportASTK answers
        NoRsaKey until `tpactl as keygen` made one)."""
        rsa = os.path.join(self.tmp, "rsa.pem")
        shutil.copy(self.rsa_key, rsa)
        os.chmod(rsa, 0o600)
        t = self.tpas()
        self.use_rsa_key(t, rsa)
        for path in (t.key_file, t.store_key_file, rsa):
            # A key its group may write is refused too: the group could put its own key in.
            for mode, said in ((0o644, "is readable by other users: run chmod o-rwx"),
                               (0o660, "is writable by its group: run chmod g-w"),
                               (0o666, "is readable by other users and writable by its "
                                       "group: run chmod o-rwx,g-w")):
                with self.subTest(path=os.path.basename(path), mode=oct(mode)):
                    os.chmod(path, mode)
                    self.refused(t.conf, f"{path} {said} {path}")
            os.chmod(path, 0o600)
        os.chmod(t.key_file, 0o640)  # root:tpas 0640, the daemon's group reading it: taken
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        os.chmod(t.key_file, 0o600)
        # The empty file tmpfiles.d makes for the credential (tpas restarted in a loop on
        # it) is no key yet: tpas starts, ImportASTK says why it cannot decrypt.
        with open(rsa, "w"):
            pass
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        t.start()
        p = t.tpactl("as", "import-astk", encrypt_astk(self.public_pem, os.urandom(16)))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"{rsa} is empty: make it with tpactl as keygen --out {rsa}",
                      p.stderr + p.stdout)
        t.stop()
        # Anything else that is not an RSA private key stops --check-config and the start,
        # naming the file and the fix: a public key, garbage, another kind of key, no file.
        ec_key = self.self_signed("ec")[1]
        for name, make in (("public key", lambda: pathlib.Path(rsa).write_text(self.public_pem)),
                           ("garbage", lambda: pathlib.Path(rsa).write_text("garbage\n")),
                           ("EC key", lambda: shutil.copy(ec_key, rsa)),
                           ("no file", lambda: os.unlink(rsa))):
            with self.subTest(rsa=name):
                make()
                if os.path.exists(rsa):
                    os.chmod(rsa, 0o600)
                want = (f"{rsa} does not exist: make it with tpactl as keygen --out {rsa}"
                        if name == "no file" else
                        f"the RSA key {rsa} holds no RSA private key")
                err = self.refused(t.conf, want, f"tpactl as keygen --out {rsa}")
                if os.path.exists(rsa):
                    # The fix it names works as written: keygen never overwrites a file
                    # that holds anything, so the file is emptied first.
                    self.assertIn("empty the file (none yet), then make one with", err)
                    pathlib.Path(rsa).write_text("")
                    k = subprocess.run([TPACTL, "as", "keygen", "--out", rsa],
                                       capture_output=True, text=True, timeout=120)
                    self.assertEqual(k.returncode, 0, k.stderr)
                    p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                                       capture_output=True, text=True, timeout=30)
                    self.assertEqual(p.returncode, 0, p.stderr)

    def test_key_and_certificate_problems_are_named_at_their_line_with_the_fix(self):
        """--check-config and the start name what is wrong with the tunnel's certificate
        and keys and the RSA key, at the directive's file:line where the file set it: a
        file that is not there (with the system's reason), a TLS key without a
        certificate (the listener would speak plain HTTP), a key protected by a
        passphrase (how to store that same key without one: the fix works as written), an
        RSA key shorter than Key Manager's 2048 bits."""
        cert, key = self.self_signed("tunnel")
        missing = os.path.join(self.tmp, "missing.pem")

        def tunnel(lines):
            t = self.tpas()
            self.tunnel_conf(t, lines)
            return t
        t = tunnel(f"tls-cert-file = {missing}\ntls-key-file = {key}\n")
        self.refused(t.conf,
                     f"{t.conf}:2: tunnel.tls-cert-file {missing}: No such file or directory")
        t = tunnel(f"tls-cert-file = {cert}\ntls-key-file = {missing}\n")
        self.refused(t.conf, f"{t.conf}:3: tunnel.tls-key-file: cannot load the tunnel's TLS "
                     f"key: {missing} (the credential tunnel-tls-key) does not exist")
        t = tunnel(f"tls-key-file = {key}\n")
        self.refused(t.conf,
                     f"{t.conf}:2: tunnel.tls-key-file is set but tunnel.tls-cert-file is not")
        locked = os.path.join(self.tmp, "locked.key")
        subprocess.run(["openssl", "pkey", "-in", key, "-aes128", "-passout", "pass:x", "-out",
                        locked], check=True, capture_output=True)
        os.chmod(locked, 0o600)
        t = tunnel(f"tls-cert-file = {cert}\ntls-key-file = {locked}\n")
        self.refused(t.conf, f"{t.conf}:3: tunnel.tls-key-file: the tunnel's TLS key {locked} "
                     "is protected by a passphrase")

        # The RSA key Key Manager encrypts for, protected by a passphrase: never "make a
        # new one", which would leave every ASTK made for it undecryptable.
        rsa = os.path.join(self.tmp, "rsa.pem")
        for cipher in ("-aes128", "-des3"):
            with self.subTest(cipher=cipher):
                subprocess.run(["openssl", "pkey", "-in", self.rsa_key, cipher, "-passout",
                                "pass:x", "-out", rsa, *(["-traditional"] if cipher == "-des3"
                                                         else [])],
                               check=True, capture_output=True)
                os.chmod(rsa, 0o600)
                t = self.tpas()
                self.use_rsa_key(t, rsa)
                err = self.refused(t.conf, f"the RSA key {rsa} is protected by a passphrase")
                self.assertNotIn("keygen", err)
                fix = f"openssl pkey -in {rsa} -out {rsa}.plain"
                self.assertIn(fix, err)
                self.assertIn(f"chmod 0600 {rsa}.plain, and point astk.rsa-key-file", err)
                if os.path.exists(rsa + ".plain"):
                    os.unlink(rsa + ".plain")
                subprocess.run(fix.split() + ["-passin", "pass:x"], check=True,
                               capture_output=True)
                os.chmod(rsa + ".plain", 0o600)
                self.use_rsa_key(t, rsa + ".plain")
                p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                t.start()
                self.import_astk(t)  # the same key: what Key Manager encrypted still opens
                t.stop()
                self.use_rsa_key(t, rsa)

        # RSA-1024: refused, saying why and how to make one of the right size.
        subprocess.run(["openssl", "genrsa", "-out", rsa, "1024"], check=True,
                       capture_output=True)
        os.chmod(rsa, 0o600)
        err = self.refused(t.conf, f"the RSA key {rsa} is RSA-1024, shorter than the 2048 "
                           "bits of Key Manager's ASTK key")
        self.assertIn("tpactl as keygen --out NEW-FILE", err)

    def test_a_tunnel_key_of_more_than_one_line_is_refused(self):
        """A tunnel key file with a second line (or another control character) would sign
        no Token the LRC makes: refused at start and by --check-config, the key not shown;
        one newline at its end is fine."""
        t = self.tpas()
        for text in (TUNNEL_KEY + "\nsecond line\n", TUNNEL_KEY + "\r\n" + TUNNEL_KEY,
                     TUNNEL_KEY[:16] + "\t" + TUNNEL_KEY[16:]):
            write_secret(t.key_file, text)
            self.refused(t.conf, f"cannot load the tunnel key: {t.key_file} holds more than "
                         "one line (or another control character)", absent=[TUNNEL_KEY[:16]])
        write_secret(t.key_file, TUNNEL_KEY)  # with its newline
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_check_config_names_the_credentials_it_cannot_see(self):
        """Run by hand, --check-config cannot see what the unit's LoadCredential= gives at
        start: it names those keys instead of failing on them; with
        $CREDENTIALS_DIRECTORY set (as in the unit) a missing one is an error."""
        t = self.tpas()
        with open(t.conf) as f:
            conf = f.read()
        bare = os.path.join(self.tmp, "bare.conf")
        with open(bare, "w") as f:
            f.write(conf.replace(f"key-file = {t.key_file}\n", "")
                    .replace(f"key-file = {t.store_key_file}\n", ""))
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        p = subprocess.run([TPAS, "--config", bare, "--check-config"], capture_output=True,
                           text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("credential tunnel-key not checked", p.stderr)
        self.assertIn("credential store-key not checked", p.stderr)
        creds = os.path.join(self.tmp, "creds")
        os.makedirs(creds)
        shutil.copy(t.key_file, os.path.join(creds, "tunnel-key"))
        p = subprocess.run([TPAS, "--config", bare, "--check-config"], capture_output=True,
                           text=True, timeout=30, env={**env, "CREDENTIALS_DIRECTORY": creds})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("credential store-key not found", p.stderr)

    def test_uplinks_status_and_usage(self):
        t, s, _ = self.started()
        for text in (b"32.5C/90.5F", b"29.9C/85.8F"):
            self.assertEqual(s.uplink(DEV, text)[0], 200)
        p = t.tpactl("as", "uplinks", check=0)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        # $TPAS_SOCKET in place of --socket (the apps socket serves uplinks too).
        p = subprocess.run([TPACTL, "as", "uplinks"], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "TPAS_SOCKET": t.apps})
        self.assertEqual((p.returncode, p.stdout.splitlines()), (0, lines), p.stderr)
        self.assertRegex(lines[0], r'^1 \S+ 0024AEB3C02BE1C4 port 1 fcnt 0 payload [0-9A-F]+ '
                                   r'"32\.5C/90\.5F"$')
        p = t.tpactl("--json", "as", "uplinks", "--after", "1", check=0)
        self.assertEqual([json.loads(x)["seq"] for x in p.stdout.splitlines()], [2])
        # A quote or a backslash in the text is escaped: the quotes hold the payload alone.
        self.assertEqual(s.uplink(DEV, b'a"b\\c')[0], 200)
        p = t.tpactl("as", "uplinks", "--after", "2", check=0)
        self.assertTrue(p.stdout.endswith(' payload 6122625C63 "a\\"b\\\\c"\n'), p.stdout)
        # --follow keeps the stream open for new uplinks.
        f = subprocess.Popen([TPACTL, "--socket", t.admin, "as", "uplinks", "--follow",
                              "--after", "3"], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(s.uplink(DEV, b"followed")[0], 200)
            line = f.stdout.readline()
            self.assertIn('"followed"', line)
        finally:
            f.terminate()
            f.wait(10)
            f.stdout.close()
        p = t.tpactl("as", "status", check=0)
        self.assertIn("4 accepted", p.stdout)
        self.assertRegex(p.stdout, r"refused: 0 bad request, .*, 0 timed out, .*0 TLS failed")
        self.assertIn("last seq 4", p.stdout)
        st = json.loads(t.tpactl("--json", "as", "status", check=0).stdout)
        self.assertEqual(st["journal"]["lastSeq"], 4)
        self.assertEqual(t.tpactl("as", "frobnicate").returncode, 2)
        self.assertEqual(t.tpactl("as", "status", "--port", "1").returncode, 2)
        self.assertEqual(t.tpactl("as", "send", "--dev-eui", DEV).returncode, 2)
        # Digits only: strtoll alone took " 1" and "+1".
        for bad in (" 1", "+1", "1 ", "-1", "", "0x1", "99999999999999999999"):
            p = t.tpactl("as", "uplinks", "--after", bad, check=2)
            self.assertIn(f"--after needs a whole number, not '{bad}'", p.stderr)
        p = subprocess.run([TPACTL, "--socket", os.path.join(self.tmp, "none.sock"), "as",
                            "status"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 3)
        self.assertIn("is tpas running?", p.stderr)
        self.assertIn("or set TPAS_SOCKET", p.stderr)  # as tpad's commands name theirs
        # A tpas killed leaves its socket behind: nothing listens, and tpas (not tpad) is
        # the one to start.
        t.kill9()
        p = t.tpactl("as", "status", check=3)
        self.assertIn("Nothing listens there: tpas is not running (systemctl start tpas)",
                      p.stderr)
        self.assertNotIn("tpad", p.stderr)
        t.start()
        # tpas stopping ends a followed stream: said on stderr, exit 3 (it was a silent 0).
        wait_for(lambda: t.status()["subscribers"] == 0, 10, "the last follower gone")
        f = subprocess.Popen([TPACTL, "--socket", t.apps, "as", "uplinks", "--follow",
                              "--after", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        wait_for(lambda: t.status()["subscribers"] >= 1, 10, "the follower")
        t.stop()
        out, err = f.communicate(timeout=20)
        self.assertEqual(f.returncode, 3, err)
        self.assertIn("tpas ended the stream", err)
        # It names the seq to follow again from: the last one it printed.
        self.assertIn("follow again with --after 4\n", err)
        self.assertEqual([int(x.split()[0]) for x in out.splitlines()], [4])
        t.start()
        # The admin interface is not on the apps socket.
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.ASAdmin.ListASTKs")
            self.assertEqual(e.exception.error, "org.varlink.service.MethodNotFound")
            info = c.call("org.varlink.service.GetInfo")
            self.assertEqual(info["interfaces"], ["org.varlink.service", "io.tpad.AS"])

    def test_a_newcomers_mistakes_are_usage_errors_that_say_what_is_wrong(self):
        """What tpas would refuse is checked before anything is sent (tpactl(1): exit 2),
        and the message says what is in the way: a 0x, spaces, dashes or colons as
        copied, or the length; a typo gets one hint line with the closest command or
        option, not the whole usage. Nothing is stored or sent."""
        t, s = self.downlink_ready()
        enc = encrypt_astk(self.public_pem, os.urandom(16))
        spaced = " ".join(enc[i:i + 8] for i in range(0, len(enc), 8))
        for args, said in [
                (["as", "import-astk", "0x" + enc], "character 2 is 'x': give the digits "
                 "alone, without 0x, spaces, dashes or colons"),
                (["as", "import-astk", spaced], "character 9 is ' '"),
                (["as", "import-astk", enc[:64]], "encryptedASKey must be an even number "
                 "(128 to 1024) of hexadecimal digits; it has 64"),
                (["as", "import-astk", enc, "--dev-eui", "00-24-AE-B3-C0-2B-E1-C4"],
                 "--dev-eui must be 16 hexadecimal digits, not '00-24-AE-B3-C0-2B-E1-C4'; "
                 "character 3 is '-'"),
                (["as", "send", "--dev-eui", "00:24:AE:B3:C0:2B:E1:C4", "--port", "2",
                  "--payload", "01"], "character 3 is ':'"),
                (["as", "send", "--dev-eui", DEV, "--port", "2", "--payload", "00" * 243],
                 "--payload must be an even number (0 to 484) of hexadecimal digits; it has "
                 "486"),
                (["as", "send", "--dev-eui", DEV, "--port", "2"],
                 "as send needs --dev-eui EUI, --port N and --payload HEX"),
                (["as", "upliks"], "Did you mean 'tpactl as uplinks'?"),
                (["as", "uplinks", "--folow"], "Did you mean '--follow'? (tpactl as --help)"),
                # Never abbreviated, as tpactl's other commands: named, with the option meant.
                (["as", "uplinks", "--fol"], "unknown option '--fol'\nDid you mean '--follow'?"),
                (["as", "keygen", "--out"], "--out needs a value")]:
            with self.subTest(args=args[:2] + [a[:20] for a in args[2:]]):
                p = t.tpactl(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(said, p.stderr)
                self.assertLessEqual(len(p.stderr.splitlines()), 2, p.stderr)
        self.assertEqual(len(json.loads(t.tpactl("--json", "as", "astks",
                                                 check=0).stdout)["astks"]), 1)
        self.assertEqual(len(s.state["downlinks"]), 0)
        # Either case of a DevEUI is the same device.
        t.tpactl("as", "send", "--dev-eui", DEV.lower(), "--port", "2", "--payload", "01",
                 check=0)
        self.assertEqual(len(s.state["downlinks"]), 1)

    def test_an_admin_command_on_the_apps_socket_names_the_admin_socket(self):
        """tpactl(1): a command sent to the wrong socket is a usage error that says which
        socket to use; for tpas, an ASAdmin command on its apps socket (it was
        "MethodNotFound", exit 1)."""
        t = self.tpas().start()
        for args in (["as", "astks"],
                     ["as", "import-astk", encrypt_astk(self.public_pem, os.urandom(16))]):
            with self.subTest(command=args[1]):
                p = subprocess.run([TPACTL, "--socket", t.apps, *args], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(f"but {t.apps} is its apps socket", p.stderr)
                self.assertIn("Use the admin socket: --socket /run/tpas/admin.sock", p.stderr)
        self.assertEqual(t.status()["journal"]["astks"], 0)

    def test_the_setup_by_hand_with_the_lrc_simulator_program(self):
        """README's setup tried by hand, with test/lrc-sim/lrc_sim.py as a program for the
        network: device (Key Manager's encryptedASKey for the public key of keygen),
        import-astk, uplink (text, or hex on another port), a downlink the serving
        simulator checks, across its processes' shared state file."""
        lrc = [sys.executable, os.path.join(tpadtest.SRC_ROOT, "test", "lrc-sim",
                                            "lrc_sim.py")]
        state = os.path.join(self.tmp, "lrc.json")
        pem = os.path.join(self.tmp, "as-public.pem")
        pathlib.Path(pem).write_text(self.public_pem)
        server = subprocess.Popen([*lrc, "serve", "--state", state, "--key", TUNNEL_KEY],
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (server.terminate(), server.wait(), server.stdout.close()))
        port = int(server.stdout.readline())
        t = self.tpas(lrc_url=f"http://127.0.0.1:{port}").start()

        def run(*args, check=0):
            p = subprocess.run([*lrc, *args], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, check, p.stderr)
            return p
        up = ["uplink", "--state", state, "--key", TUNNEL_KEY, "--url", t.url, "--dev-eui", DEV]
        p = run(*up, "--text", "hi", check=2)
        self.assertIn(f"no device {DEV} in {state}: add it first with lrc_sim.py device", p.stderr)
        enc = run("device", "--state", state, "--dev-eui", DEV, "--public-key",
                  pem).stdout.strip()
        t.tpactl("as", "import-astk", enc, check=0)
        self.assertEqual(run(*up, "--text", "hi").stdout.strip(),
                         '200 {"seq": 1, "duplicate": false}')
        self.assertEqual(run(*up, "--hex", "00D730", "--fport", "2").stdout.split()[0], "200")
        ups = t.uplinks()
        self.assertEqual([(u["fPort"], u["payload"]) for u in ups],
                         [(1, "6869"), (2, "00D730")])
        # A device added while the simulator serves is known to its next downlink.
        p = t.tpactl("as", "send", "--dev-eui", DEV, "--port", "2", "--payload", "0384", check=0)
        self.assertIn("LRC answered 200 Request queued by LRC", p.stdout)
        with open(state) as f:
            got = json.load(f)
        self.assertEqual([(d["dev_eui"], d["payload"]) for d in got["downlinks"]],
                         [(DEV, "0384")])
        self.assertEqual(got["violations"], [])

    def test_a_store_key_that_is_not_the_stores_is_refused(self):
        """Another valid key for an existing store: refused at start and by --check-config,
        nothing written (tpas once started, answered 503 for known devices and sealed new
        keys with the wrong one beside the others). A store from before the key check
        value is checked against its first sealed ASTK."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"one")[0], 200)
        t.stop()
        db = os.path.join(t.workdir, "tpas.db")

        def rows():
            return subprocess.run(["sqlite3", db, "SELECT COUNT(*) FROM astk; SELECT COUNT(*) "
                                   "FROM session; SELECT COUNT(*) FROM uplink;"],
                                  capture_output=True, text=True, check=True).stdout

        before = rows()
        right = t.store_key
        for older in (False, True):
            with self.subTest(older=older):
                if older:
                    subprocess.run(["sqlite3", db, "DELETE FROM meta"], check=True)
                write_secret(t.store_key_file, os.urandom(32).hex())
                self.refused(t.conf, "the store key does not match the key this store was "
                             "created with")
                self.assertEqual(rows(), before)
                write_secret(t.store_key_file, right)
                p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                t.start()
                self.assertEqual(s.uplink(DEV, b"two", with_key=False)[0], 200)
                t.stop()
                before = rows()

    def test_check_and_print_config(self):
        t = self.tpas()
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([TPAS, "--config", t.conf, "--print-config"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("max-time-deviation = 1m\n", p.stdout)
        self.assertIn("# from default\npath = /\n", p.stdout)
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("[tunnel]\nmax-time-deviation = soon\n")
        p = subprocess.run([TPAS, "--config", bad, "--check-config"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad.conf:2", p.stderr)
        # What tpas would refuse at start, --check-config refuses, at the line.
        long_sock = "/tmp/" + "s" * 110
        for section, line, want in [
                ("tunnel", "listen = 127.0.0.1:99999", "the port must be a number"),
                ("tunnel", "listen = :8090", "the host is missing"),
                ("tunnel", "listen = 127.0.0.1", "is not HOST:PORT"),
                ("tunnel", "path = relative", "tunnel.path must start with '/'"),
                ("tunnel", "as-id = " + "a" * 70, "tunnel.as-id is longer than 64"),
                ("lrc", "url = https://lrc.example.com/path", "with no path"),
                ("lrc", "url = https://lrc.example.com:0", "is not https://host[:port]"),
                ("webhook", "url = ftp://x/", "is not https://host[:port][/path]"),
                # Its password is not echoed into the journal.
                ("webhook", "url = http://app:pw-in-url@127.0.0.1:8080/hook",
                 "'http://app:***@127.0.0.1:8080/hook' holds user:password@, which is not "
                 "supported"),
                ("lrc", "url = https://lrc:pw-in-url@lrc.example.com",
                 "'https://lrc:***@lrc.example.com' holds user:password@"),
                ("apps", "group = no-such-group-here", "is not a group on this machine"),
                ("admin", f"socket = {long_sock}", "longer than the 107 bytes"),
                ("metrics", "listen = [::1]9100", "is not HOST:PORT")]:
            with self.subTest(line=line):
                with open(bad, "w") as f:
                    f.write(f"# a comment\n[{section}]\n{line}\n")
                self.refused(bad, f"{bad}:3: ", want, absent=["pw-in-url"])
        # A listening host that does not resolve (where the machine's resolver answers):
        # the start's bind would fail; --check-config says so at the line.
        t0 = time.monotonic()
        try:
            socket.getaddrinfo("no-such-host.invalid", 8090)
        except socket.gaierror:
            if time.monotonic() - t0 < 1.5:
                with open(t.conf) as f:
                    good = f.read()
                lines = good.splitlines()
                at = next(i for i, l in enumerate(lines) if l.startswith("listen = "))
                lines[at] = "listen = no-such-host.invalid:8090"
                with open(t.conf, "w") as f:
                    f.write("\n".join(lines) + "\n")
                p = subprocess.run([TPAS, "--config", t.conf, "--check-config"],
                                   capture_output=True, text=True, timeout=20)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(f"{t.conf}:{at + 1}: tunnel.listen: cannot resolve "
                              "'no-such-host.invalid'", p.stderr)
                with open(t.conf, "w") as f:
                    f.write(good)
        # A world-readable tunnel key is refused.
        os.chmod(t.key_file, 0o644)
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("tunnel key", p.stderr)


class Metrics(TpasCase):
    def metrics_tpas(self, **kw):
        """tpas with [metrics] listen on a free port and an LRC for downlinks."""
        self.mport = free_port()
        s, t = self.served_lrc(extra=f"[metrics]\nlisten = 127.0.0.1:{self.mport}\n", **kw)
        return t, s

    def test_metrics_count_what_status_counts_in_both_formats(self):
        t, s = self.metrics_tpas()
        astk = self.import_astk(t)
        s.add_device(DEV, astk)
        self.assertEqual(s.uplink(DEV, b"one")[0], 200)
        target, body, ctype = s.build_uplink(DEV, b"two")
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 2, "duplicate": False}))
        self.assertEqual(s.post(target, body, ctype), (200, {"seq": 2, "duplicate": True}))
        self.assertEqual(s.uplink(DEV, b"x", key="0" * 32)[0], 401)
        with Client(t.apps) as c:
            c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "00"})
            with self.assertRaises(VarlinkError):
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV2, "fPort": 2, "payload": "00"})
        s.faults["downlink_status"] = 500
        with Client(t.apps) as c:
            with self.assertRaises(VarlinkError):
                c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "01"})
        url = f"http://127.0.0.1:{self.mport}/metrics"
        st, hdr, text = http_get(url)
        self.assertEqual(st, 200)
        self.assertTrue(hdr["Content-Type"].startswith("text/plain; version=0.0.4"))
        types, v = parse(text, openmetrics=False)
        status = t.status()
        tn = status["tunnel"]
        self.assertEqual(v['tpas_tunnel_requests_total{outcome="accepted"}'], tn["accepted"])
        self.assertEqual(v['tpas_tunnel_requests_total{outcome="accepted"}'], 2)
        self.assertEqual(v['tpas_tunnel_requests_total{outcome="duplicate"}'], 1)
        self.assertEqual(v['tpas_tunnel_requests_total{outcome="bad_token"}'], 1)
        # Every request has one outcome: the family sums to Status's requests.
        self.assertEqual(sum(x for k, x in v.items()
                             if k.startswith("tpas_tunnel_requests_total{")), tn["requests"])
        self.assertEqual(v["tpas_journal_last_seq"], status["journal"]["lastSeq"])
        self.assertEqual(v["tpas_journal_first_seq"], 1)
        self.assertEqual(v["tpas_journal_commits_total"], status["journal"]["commits"])
        self.assertEqual(v["tpas_journal_batches_total"], status["journal"]["batches"])
        self.assertEqual(status["downlinks"],
                         {"sent": 1, "lrcRefused": 1, "failed": 0, "refused": 1})
        self.assertIn("downlinks: 1 sent, 1 refused by the LRC, 0 failed, 1 not sent",
                      t.tpactl("as", "status", check=0).stdout)
        self.assertEqual(v['tpas_downlinks_total{outcome="sent"}'], 1)
        self.assertEqual(v['tpas_downlinks_total{outcome="lrc_refused"}'], 1)
        self.assertEqual(v['tpas_downlinks_total{outcome="refused"}'], 1)
        self.assertGreaterEqual(v["tpas_lrc_requests_total"], 2)
        self.assertEqual(v["tpas_subscribers"], 0)
        self.assertEqual(v['tpas_connections{socket="admin"}'], 0)
        self.assertGreaterEqual(v['tpas_connections_accepted_total{socket="apps"}'], 2)
        self.assertGreater(v["process_resident_memory_bytes"], 0)
        self.assertIn("tpas_build_info", types)
        self.assertNotIn("tpas_webhook_delivered_total", types)  # no [webhook]
        self.assertEqual(v["tpas_tunnel_connection_limit_hit_total"], 0)
        self.assertIn("tpas_tunnel_connections", types)
        # A healthy journal and LRC link.
        self.assertEqual(v["tpas_journal_failing"], 0)
        self.assertEqual(v["tpas_journal_failed_commits_total"], 0)
        self.assertEqual(v["tpas_lrc_up"], 1)
        self.assertEqual(v["tpas_lrc_breaker_open"], 0)
        # The reference parsers take it: promtool and prometheus_client, both formats.
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool is missing: scripts/deps.sh installs prometheus")
        r = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run_python(TEXT_CHECK, text)
        self.assertEqual(r.returncode, 0, r.stderr)
        st, hdr, om = http_get(url, accept=PROM_ACCEPT)
        self.assertTrue(hdr["Content-Type"].startswith("application/openmetrics-text"))
        types, v2 = parse(om)
        self.assertEqual(types["tpas_build"], "info")
        self.assertEqual(v2['tpas_tunnel_requests_total{outcome="accepted"}'], 2)
        r = run_python(OM_CHECK, om)
        self.assertEqual(r.returncode, 0, r.stderr)
        # HEAD, another path, another method.
        st, _, body = http_get(url, method="HEAD")
        self.assertEqual((st, body), (200, ""))
        st, _, body = http_get(f"http://127.0.0.1:{self.mport}/")
        self.assertEqual((st, body), (404, "tpas serves its metrics at /metrics\n"))
        self.assertEqual(http_get(url, method="POST")[0], 405)
        # No key material in what anyone on the port can read.
        self.assertNotIn(TUNNEL_KEY, text.lower())
        self.assertNotIn(astk.hex(), text.lower())

    def test_http11_without_one_host_is_refused_on_the_tunnel_and_metrics(self):
        """RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with two, is
        answered 400 with the reason, counted and logged, on the tunnel and on /metrics;
        HTTP/1.0 without Host is served."""
        t, s = self.metrics_tpas()
        s.add_device(DEV, self.import_astk(t))
        target, body, ctype = s.build_uplink(DEV, b"no Host")
        for port, method, path, headers, body, served in [
                (t.port, b"POST", b"/" + target.encode(),
                 b"Content-Type: " + ctype.encode() + b"\r\n", body, b'"seq"'),
                (self.mport, b"GET", b"/metrics", b"", b"", b"# TYPE tpas_")]:
            none, two, old = host_field_answers(port, method, path, headers, body)
            with self.subTest(port=port):
                for got, why in [(none, b"HTTP/1.1 request without a Host header field"),
                                 (two, b"more than one Host header field")]:
                    self.assertTrue(got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got)
                    self.assertIn(b"\r\nConnection: close\r\n", got)
                    self.assertTrue(got.endswith(b'\r\n\r\n{"error":"' + why + b'"}\n'), got)
                self.assertTrue(old.startswith(b"HTTP/1.1 200 OK\r\n"), old)
                self.assertIn(served, old)
        self.assertEqual(len(t.uplinks()), 1)
        tn = t.status()["tunnel"]
        self.assertEqual((tn["accepted"], tn["badRequest"], tn["requests"]), (1, 2, 3))
        text = http_get(f"http://127.0.0.1:{self.mport}/metrics")[2]
        self.assertIn('tpas_tunnel_requests_total{outcome="bad_request"} 2\n', text)
        log = t.log_text()
        for who in ("tunnel", "metrics"):
            for why in ("HTTP/1.1 request without a Host header field",
                        "more than one Host header field"):
                self.assertRegex(log, f"{who}: 400 Bad Request from 127.0.0.1 port [0-9]+: "
                                      f"{why}")

    def test_counters_stay_while_tpas_stops(self):
        """SIGTERM: while a downlink to a silent LRC keeps tpas draining, /metrics still
        shows what the tunnel counted (a scrape then must not see a counter reset)."""
        lrc = socket.socket()
        lrc.bind(("127.0.0.1", 0))
        lrc.listen(4)
        self.mport = free_port()
        t = self.tpas(lrc_url=f"http://127.0.0.1:{lrc.getsockname()[1]}",
                      extra=f"[metrics]\nlisten = 127.0.0.1:{self.mport}\n").start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"x")[0], 200)
        c = Client(t.apps)
        c.send("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": "00"})
        held = []  # the LRC's connections (the pool may open one ahead): never answered

        def posted():
            ready, _, _ = select.select([lrc] + held, [], [], 0.2)
            for r in ready:
                if r is lrc:
                    held.append(lrc.accept()[0])
                elif r.recv(1, socket.MSG_PEEK):
                    return True
            return False
        wait_for(posted, 10, "the downlink's POST")  # in flight, not still in a buffer
        t.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        self.assertIsNone(t.proc.poll())  # still draining: the downlink is in flight
        st, _, text = http_get(f"http://127.0.0.1:{self.mport}/metrics")
        self.assertEqual(st, 200)
        _, v = parse(text, openmetrics=False)
        self.assertEqual(v['tpas_tunnel_requests_total{outcome="accepted"}'], 1)
        self.assertEqual(v["tpas_tunnel_connections"], 0)
        c.close()
        for h in held:
            h.close()
        lrc.close()
        self.assertEqual(t.stop(), 0)

    def test_out_of_descriptors_the_endpoint_pauses_instead_of_spinning(self):
        """accept() failing with EMFILE while scrapers wait: the endpoint (core/metrics_http,
        tpad's too) logs and pauses a second, instead of waking the loop again at once."""
        mport = free_port()
        t = self.tpas(extra=f"[metrics]\nlisten = 127.0.0.1:{mport}\n").start()
        pid = t.proc.pid

        def ticks():
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        n = len(os.listdir(f"/proc/{pid}/fd"))
        soft = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings",
                               "-o", "SOFT"], capture_output=True, text=True,
                              check=True).stdout.strip()
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={n + 3}:"], check=True)
        held = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(10)]
        time.sleep(0.3)
        t0 = ticks()
        time.sleep(2)
        spent = (ticks() - t0) / os.sysconf("SC_CLK_TCK")
        self.assertLess(spent, 0.3, f"{spent:.2f} s of CPU in 2 s while out of descriptors")
        self.assertIn("metrics: cannot accept a connection", t.log_text())
        # Said once for the whole run of pauses, not once a second.
        self.assertEqual(t.log_text().count("cannot accept"), 1, t.log_text())
        for c in held:
            c.close()
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True)
        st = wait_for(lambda: http_get(f"http://127.0.0.1:{mport}/metrics")[0] == 200, 10,
                      "the endpoint to serve again")
        self.assertTrue(st)
        self.assertRegex(t.log_text(), r"metrics: accepting connections again "
                                       r"\(accept\(\) failed (?:[2-9]|[1-9]\d+) times in \d+ s\)")

    def test_a_bad_listen_address_is_refused_at_start_and_by_check_config(self):
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            port = held.getsockname()[1]
            t = self.tpas(extra=f"[metrics]\nlisten = 127.0.0.1:{port}\n")
            p = subprocess.run([TPAS, "--config", t.conf], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"metrics.listen: cannot listen on 127.0.0.1:{port}", p.stderr)
        t2 = self.tpas(extra="[metrics]\nlisten = localhost\n")
        p = subprocess.run([TPAS, "--config", t2.conf, "--check-config"], capture_output=True,
                           text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("metrics.listen: 'localhost' is not HOST:PORT", p.stderr)

    def test_lrc_link_down_in_metrics(self):
        """An LRC that cannot be reached: tpas_lrc_up 0 and, once the breaker opened,
        tpas_lrc_breaker_open 1 (as Status says); without [lrc] url neither is there."""
        self.mport = free_port()
        t = self.tpas(lrc_url=f"http://127.0.0.1:{free_port()}",
                      extra=f"[metrics]\nlisten = 127.0.0.1:{self.mport}\n").start()
        url = f"http://127.0.0.1:{self.mport}/metrics"

        def gauges():
            return parse(http_get(url)[2], openmetrics=False)[1]
        v = wait_for(lambda: (lambda v: v if v["tpas_lrc_breaker_open"] == 1 else None)(
            gauges()), 30, "the breaker open in /metrics")
        self.assertEqual(v["tpas_lrc_up"], 0)
        self.assertEqual(t.status()["lrc"]["breaker"], "open")
        t.stop()
        t2 = self.tpas(extra=f"[metrics]\nlisten = 127.0.0.1:{self.mport}\n").start()
        types, _ = parse(http_get(url)[2], openmetrics=False)
        self.assertNotIn("tpas_lrc_up", types)
        self.assertNotIn("tpas_lrc_breaker_open", types)
        t2.stop()

    def test_shipped_alert_rules(self):
        """conf/prometheus/tpas-alerts.yml passes promtool check rules, and promtool test
        rules shows each alert firing on the condition it names and not on its near miss:
        a bad Token at once, stale Times only as a steady share, uplinks with a wrong key
        or no ASTK only when still refused a quarter hour on, a webhook only once its
        cursor stopped while uplinks wait or while its oldest waiting uplink stays over 10
        minutes old, the LRC breaker only when it stays open."""
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool is missing: scripts/deps.sh installs prometheus")
        r = subprocess.run([promtool, "check", "rules", TPAS_RULES], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("11 rules found", r.stdout)

        def series(name, instance, values, **labels):
            lab = ",".join(f'{k}="{v}"' for k, v in
                           sorted({**labels, "instance": instance, "job": "tpas"}.items()))
            return {"series": f"{name}{{{lab}}}", "values": values}

        def alert(instance, summary, description, **labels):
            return {"exp_labels": {**labels, "instance": instance, "job": "tpas"},
                    "exp_annotations": {"summary": summary, "description": description}}

        def fires(at, name, instance, summary, description, **labels):
            return {"eval_time": at, "alertname": name,
                    "exp_alerts": [alert(instance, summary, description, **labels)]}

        def quiet(at, name):
            return {"eval_time": at, "alertname": name, "exp_alerts": []}
        req = "tpas_tunnel_requests_total"
        journal = ("Writes to the journal fail (disk full, I/O error): uplinks are answered "
                   "503 (the LRC sends them again) and downlinks StoreFailed. tpactl as "
                   "status shows since when and why (exit 6).")
        tests = [{
            # as1 fails for a while, then heals; as2 never fails. Every 15 s.
            "interval": "15s",
            "input_series": [
                series("up", "as1", "1 1 0x12"),
                series("up", "as2", "1 0 0 1x12"),
                series("tpas_journal_failing", "as1", "0 0 1 1 1 0x30"),
                series("tpas_journal_failed_commits_total", "as1", "0 0 1 2 3 3x30"),
                series("tpas_journal_failing", "as2", "0x35"),
                series("tpas_journal_failed_commits_total", "as2", "0x35"),
            ],
            "alert_rule_test": [
                quiet("45s", "TpasDown"),
                fires("2m", "TpasDown", "as1", "tpas on as1 does not answer scrapes",
                      "Uplinks from the LRC are not journaled (the LRC's retries fail too) "
                      "and applications get neither uplinks nor downlinks. Check systemctl "
                      "status tpas.", severity="critical"),
                quiet("15s", "TpasJournalFailing"),
                fires("30s", "TpasJournalFailing", "as1", "tpas's journal cannot commit on as1",
                      journal, severity="critical"),
                # Healed, but within 5 minutes of the failures: still shown.
                fires("2m", "TpasJournalFailing", "as1", "tpas's journal cannot commit on as1",
                      journal, severity="critical"),
                quiet("8m", "TpasJournalFailing"),
            ],
        }, {
            # Tunnel refusals, every 15 s: as1 gets 3 bad Tokens once and a steady 1 in 6
            # stale Times; as2 a burst of stale Times for 3 minutes, then none.
            "interval": "15s",
            "input_series": [
                series(req, "as1", "0+10x100", outcome="accepted"),
                series(req, "as1", "0x4 1 2 3 3x93", outcome="bad_token"),
                series(req, "as1", "0+2x100", outcome="stale_time"),
                series(req, "as2", "0+10x100", outcome="accepted"),
                series(req, "as2", "0x100", outcome="bad_token"),
                series(req, "as2", "0x20 0+5x12 60x67", outcome="stale_time"),
            ],
            "alert_rule_test": [
                quiet("45s", "TpasTunnelRefusing"),
                fires("2m", "TpasTunnelRefusing", "as1",
                      "tpas on as1 refuses tunnel requests: bad_token",
                      "3 requests in 5 minutes carried a Token that does not verify with the "
                      "tunnel key: the LRC's key and tunnel.key-file differ (every uplink is "
                      "refused), or someone else posts to the tunnel. The log names each "
                      "(MESSAGE_ID 76b9d42487fa44238935ed01d93f8eeb, STATUS 401).",
                      severity="warning", outcome="bad_token"),
                # 1 in 6 stale since the start: pending for 10 minutes, then firing; the
                # bad Tokens are older than 5 minutes by then.
                quiet("9m", "TpasTunnelRefusing"),
                fires("12m", "TpasTunnelRefusing", "as1",
                      "tpas on as1 refuses tunnel requests: stale_time",
                      "16.67% of the tunnel's requests carry a Time further than "
                      "tunnel.max-time-deviation from this host's clock: check NTP here "
                      "(timedatectl) and the LRC's clock.",
                      severity="warning", outcome="stale_time"),
            ],
        }, {
            # ASTK refusals, every minute: as1 gets uplinks with a wrong key and uplinks
            # with no ASTK for 40 minutes, then none (the ASTKs imported); as2 a burst with
            # no ASTK for 3 minutes when its customer's first devices join and one wrong
            # key (each imported in time); as3 none.
            "interval": "1m",
            "input_series": [
                series(req, "as1", "0+1x40 40x30", outcome="wrong_key"),
                series(req, "as1", "0+2x40 80x30", outcome="no_astk"),
                series(req, "as2", "0x9 1x60", outcome="wrong_key"),
                series(req, "as2", "0 0 0 4 8 12x65", outcome="no_astk"),
                series(req, "as3", "0x70", outcome="wrong_key"),
                series(req, "as3", "0x70", outcome="no_astk"),
                series(req, "as1", "0+1x40 40x30", outcome="no_session"),
                series(req, "as2", "0 0 1 2 2x66", outcome="no_session"),
                series(req, "as3", "0x70", outcome="no_session"),
            ] + [series(req, a, "0+10x70", outcome="accepted") for a in ("as1", "as2", "as3")],
            "alert_rule_test": [
                # Refused in two quarter hours in a row since 16m: pending for 5 minutes.
                quiet("18m", "TpasTunnelRefusing"),
                {"eval_time": "25m", "alertname": "TpasTunnelRefusing", "exp_alerts": [
                    alert("as1", "tpas on as1 refuses tunnel requests: wrong_key",
                          "15 uplinks in 15 minutes, and more in the 15 before, carried an "
                          "AppSKey envelope that does not unwrap with the ASTK of its "
                          "KEKLabel: the LRC uses another ASTK than tpas holds under that "
                          "label, and every uplink of those devices is refused and lost to "
                          "the applications. Import the ASTK the LRC uses (Key Manager's "
                          "encryptedASKey): tpactl as import-astk HEX --label LABEL. The log "
                          "names each DevEUI and label (MESSAGE_ID "
                          "76b9d42487fa44238935ed01d93f8eeb, STATUS 401).",
                          severity="warning", outcome="wrong_key"),
                    alert("as1", "tpas on as1 refuses tunnel requests: no_astk",
                          "30 uplinks in 15 minutes, and more in the 15 before, came with an "
                          "AppSKey for a KEKLabel or CustomerID that tpas has no ASTK for: "
                          "they are answered 503 and reach no application until the ASTK is "
                          "imported. Import it (Key Manager's encryptedASKey): tpactl as "
                          "import-astk HEX, with --label or --customer-id as the log says; the "
                          "LRC's retries are then taken. The log names each DevEUI and the "
                          "KEKLabel or CustomerID missing (MESSAGE_ID "
                          "76b9d42487fa44238935ed01d93f8eeb, STATUS 503); tpactl as astks "
                          "lists the ASTKs held.", severity="warning", outcome="no_astk"),
                    alert("as1", "tpas on as1 refuses tunnel requests: no_session",
                          "15 uplinks in 15 minutes, and more in the 15 before, came without "
                          "an AppSKey field and from no session whose key tpas has (none had "
                          "begun by their Time, or its DevAddr is not theirs): they are "
                          "answered 503 and reach no application until an uplink of their "
                          "session with the key is taken. If the LRC sends the key only in a "
                          "session's first uplink and that one was lost, the device must join "
                          "again, or the LRC be set to send the AppSKey in every uplink. The "
                          "log names each DevEUI (MESSAGE_ID "
                          "76b9d42487fa44238935ed01d93f8eeb, STATUS 503).",
                          severity="warning", outcome="no_session")]},
                # Imported at 40m: no refusal in the last quarter hour by 56m.
                quiet("56m", "TpasTunnelRefusing"),
            ],
        }, {
            # Every minute: as1's webhook stops at seq 30 while uplinks go on; as2's lags
            # but moves. as1's breaker flips open/half-open for 5 minutes (the LRC keeps
            # failing), as2's opens once.
            "interval": "1m",
            "input_series": [
                series("tpas_journal_last_seq", "as1", "10+10x40"),
                series("tpas_webhook_cursor", "as1", "10 20 30x39"),
                series("tpas_journal_last_seq", "as2", "10+10x40"),
                series("tpas_webhook_cursor", "as2", "5+10x40"),
                # Their ages: as1's oldest waiting since 1m; as2's 5 minutes old throughout;
                # as3 a receiver down for 4 minutes, then back.
                series("tpas_webhook_lag_seconds", "as1", "0 0 60+60x38"),
                series("tpas_webhook_lag_seconds", "as2", "300x40"),
                series("tpas_webhook_lag_seconds", "as3", "0x5 600+60x3 0x31"),
                series("tpas_lrc_breaker_open", "as1", "0 1 0.5 1 0.5 1 0.5 0x34"),
                series("tpas_lrc_up", "as1", "1 0 0 0 0 0 0 1x34"),
                series("tpas_lrc_breaker_open", "as2", "0 1 0x39"),
                series("tpas_lrc_up", "as2", "1 0 1x39"),
            ],
            "alert_rule_test": [
                quiet("15m", "TpasWebhookBehind"),
                quiet("9m", "TpasWebhookLagging"),  # as3's 3 minutes over 600 s
                quiet("15m", "TpasWebhookLagging"),
                fires("20m", "TpasWebhookLagging", "as1",
                      "tpas's webhook is 19m 0s behind on as1",
                      "The oldest uplink the webhook has not accepted was received 19m 0s ago: "
                      "the applications that read the webhook are that late. tpactl as status "
                      "shows its cursor and last error; tpas_journal_last_seq - "
                      "tpas_webhook_cursor is how many wait.", severity="warning"),
                fires("25m", "TpasWebhookBehind", "as1",
                      "tpas's webhook delivers nothing on as1",
                      "230 uplinks wait for the webhook and none was accepted in 20 minutes. "
                      "tpactl as status shows its last error.", severity="warning"),
                quiet("1m", "TpasLrcBreakerOpen"),
                fires("4m", "TpasLrcBreakerOpen", "as1",
                      "tpas's circuit breaker to the LRC is open on as1",
                      "Repeated failures of the LRC: downlinks answer Busy at once, with no "
                      "FCntDn spent. tpactl as status shows each session's last error "
                      "(exit 5); the journal has the opening (MESSAGE_ID "
                      "dffc2bc531644bfbab7154f6324d9f6a).", severity="warning"),
                quiet("2m", "TpasLrcDown"),
                fires("4m", "TpasLrcDown", "as1", "tpas on as1 has no session to the LRC",
                      "No session to lrc.url has been ready for 2 minutes: downlinks fail "
                      "(uplinks are not affected). tpactl as status shows each session's "
                      "last error (exit 4).", severity="warning"),
                quiet("10m", "TpasLrcBreakerOpen"),
                quiet("10m", "TpasLrcDown"),
            ],
        }]
        test = os.path.join(self.tmp, "tpas-alerts.test.yml")
        with open(test, "w") as f:  # YAML reads JSON
            json.dump({"rule_files": [TPAS_RULES], "evaluation_interval": "15s",
                       "tests": tests}, f, indent=1)
        r = subprocess.run([promtool, "test", "rules", test], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout + r.stderr)

    def test_prometheus_fires_an_alert_on_bad_tokens(self):
        """A real Prometheus with the shipped rules scrapes a real tpas: healthy, no alert
        fires; then requests with a wrong Token are posted and TpasTunnelRefusing fires."""
        t, s = self.metrics_tpas()
        s.add_device(DEV, self.import_astk(t))
        self.assertEqual(s.uplink(DEV, b"ok")[0], 200)
        with Prometheus(self.tmp, self.mport, "tpas", rules=TPAS_RULES) as prom:
            wait_for(lambda: prom.query('tpas_tunnel_requests_total{outcome="bad_token"}'),
                     60, "Prometheus to scrape tpas")

            def evaluated():
                rules = [r for g in prom.get("rules")["groups"] for r in g["rules"]]
                # A rule not evaluated yet says 0001-01-01T00:00:00Z.
                return rules if all(r.get("lastEvaluation", "").startswith("2")
                                    for r in rules) else None
            rules = wait_for(evaluated, 30, "the rules evaluated")
            self.assertEqual(len(rules), 11)
            self.assertTrue(all(r["health"] == "ok" for r in rules), rules)
            self.assertEqual([r["name"] for r in rules if r.get("state") == "firing"], [])
            for _ in range(2):
                self.assertEqual(s.uplink(DEV, b"x", key="0" * 32)[0], 401)
            res = wait_for(lambda: prom.query(
                'ALERTS{alertname="TpasTunnelRefusing",alertstate="firing"}'), 30,
                "TpasTunnelRefusing to fire")
            self.assertEqual(res[0]["metric"]["outcome"], "bad_token")
            self.assertEqual(res[0]["metric"]["instance"], f"127.0.0.1:{self.mport}")
            self.assertEqual(res[0]["metric"]["severity"], "warning")

    def test_prometheus_scrapes_tpas(self):
        """A real Prometheus server scrapes tpas and answers a query for a counter."""
        t, s = self.metrics_tpas()
        s.add_device(DEV, self.import_astk(t))
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"%d" % i)[0], 200)
        with Prometheus(self.tmp, self.mport, "tpas") as prom:
            res = wait_for(lambda: prom.query('tpas_tunnel_requests_total{outcome="accepted"}'),
                           60, "Prometheus to scrape tpas")
            self.assertEqual(res[0]["metric"]["job"], "tpas")
            self.assertEqual(float(res[0]["value"][1]), 3)
            self.assertEqual(float(prom.query("tpas_journal_last_seq")[0]["value"][1]), 3)
            target = prom.get("targets")["activeTargets"][0]
            self.assertEqual(target["health"], "up", target.get("lastError"))


class Webhook(TpasCase):
    def sending(self, url, batch, n, stem, extra=""):
        """A tpas delivering to url in batches, n uplinks (payload stem + i) sent to it;
        extra: more of its configuration."""
        t = self.tpas(extra=f"[webhook]\nurl = {url}\nbatch = {batch}\nretry-max = 1s\n" +
                      extra)
        t.start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for i in range(n):
            self.assertEqual(s.uplink(DEV, stem + b"%d" % i)[0], 200)
        return t, s

    def test_webhook_delivers_in_order_with_retries_and_resumes(self):
        got, lock = [], threading.Lock()
        fail = {"left": 2}

        def answer(body):
            with lock:
                status = 500 if fail["left"] > 0 else 200
                if status == 200:
                    got.extend(json.loads(body)["uplinks"])
                else:
                    fail["left"] -= 1
            return status, b""
        t, s = self.sending(self.receiver(answer) + "/hook/uplinks", 3, 5, b"w")
        wait_for(lambda: len(got) >= 5, 20, "5 uplinks at the webhook")
        wh = t.status()["webhook"]
        self.assertEqual(wh["cursor"], 5)
        self.assertEqual(wh["failures"], 2)
        # The end of the failures is said, as each of them was.
        self.assertIn("delivering again after 2 failed POSTs", t.log_text())
        t.stop()
        # Sent while tpas is down: none; after the restart, only the new ones.
        t.start()
        for i in range(5, 8):
            self.assertEqual(s.uplink(DEV, b"w%d" % i)[0], 200)
        wait_for(lambda: len(got) >= 8, 20, "8 uplinks at the webhook")
        time.sleep(0.3)
        with lock:
            self.assertEqual([u["seq"] for u in got], list(range(1, 9)))
            self.assertEqual([bytes.fromhex(u["payload"]) for u in got],
                             [b"w%d" % i for i in range(8)])
        self.assertIn("webhook", t.log_text())
        # Retention never drops what the webhook has not delivered: with the endpoint
        # failing, four uplinks made older than store.retention-days stay through a
        # restart (the prune runs at start) and are delivered once it answers again.
        fail["left"] = 10 ** 6
        for i in range(8, 12):
            self.assertEqual(s.uplink(DEV, b"w%d" % i)[0], 200)
        t.stop()
        subprocess.run(["sqlite3", os.path.join(t.workdir, "tpas.db"),
                        "UPDATE uplink SET received_ms = received_ms - 3 * 86400000"],
                       check=True)
        with open(t.conf, "a") as f:
            f.write("[store]\nretention-days = 1\n")
        t.start()
        self.show_lrc_clock(s)
        wait_for(lambda: "kept: the webhook has delivered up to seq 8 only" in t.log_text(),
                 10, "the prune holding back")
        fail["left"] = 0
        wait_for(lambda: len(got) >= 12, 20, "12 uplinks at the webhook")
        with lock:
            self.assertEqual([u["seq"] for u in got], list(range(1, 13)))

    def test_a_receiver_that_is_down_is_told_at_once_and_found_when_back(self):
        """Nothing listens at the webhook's port: each try fails as soon as the
        connection is refused (counted, with the reason), not after request-timeout
        (10 s), and the first try once a receiver listens there delivers, at the pace of
        the webhook's own retries (retry-max = 1s)."""
        port = free_port()
        t, s = self.sending(f"http://127.0.0.1:{port}/hook", 10, 3, b"d")
        t0 = time.monotonic()
        wait_for(lambda: t.status()["webhook"]["failures"] >= 3, 5, "three failed tries")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn("Connection refused", t.status()["webhook"]["lastError"])
        got = []
        import http.server
        import socketserver

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                got.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                           ["uplinks"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
        server = type("S", (socketserver.ThreadingMixIn, http.server.HTTPServer),
                      {"daemon_threads": True, "allow_reuse_address": True})(
                          ("127.0.0.1", port), H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        t1 = time.monotonic()
        wait_for(lambda: len(got) == 3, 10, "the uplinks at the receiver once it listens")
        self.assertLess(time.monotonic() - t1, 3)
        self.assertEqual(t.status()["webhook"]["cursor"], 3)

    def test_a_token_goes_with_every_post(self):
        """webhook.token-file: each POST carries Authorization: Bearer TOKEN (a receiver
        refuses the others), the token never in the log; a token file others can read, or
        a token that cannot go in a header, is refused without showing it."""
        token = "tpas-" + secrets.token_urlsafe(24)
        path = os.path.join(self.tmp, "webhook-token")
        write_secret(path, token)
        got, seen, lock = [], [], threading.Lock()

        def answer(body):
            with lock:
                if seen[-1].get("Authorization") != f"Bearer {token}":
                    return 401, b"bad token"
                got.extend(json.loads(body)["uplinks"])
            return 200, b""
        t, s = self.sending(self.receiver(answer, seen) + "/hook", 1, 3, b"t",
                            f"token-file = {path}\n")
        wait_for(lambda: len(got) == 3, 20, "3 uplinks at the webhook")
        self.assertEqual({h.get("Authorization") for h in seen}, {f"Bearer {token}"})
        self.assertEqual(t.status()["webhook"]["failures"], 0)
        self.assertIs(t.status()["webhook"]["token"], True)
        self.assertIn(" (with a token), delivered through seq 3",
                      t.tpactl("as", "status").stdout)
        self.assertNotIn(token, t.log_text())
        # Refused at --check-config and at start, the token not shown.
        t.stop()
        os.chmod(path, 0o644)
        self.refused(t.conf, f"run chmod o-rwx {path}")
        os.chmod(path, 0o600)
        write_secret(path, "two words")
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("the webhook token's character 4 is not visible ASCII", p.stderr)
        self.assertNotIn("words", p.stderr)
        write_secret(path, "x" * 1024 + "TAIL")
        p = subprocess.run([TPAS, "--config", t.conf, "--check-config"], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot load the webhook token: it is longer than 1024 characters",
                      p.stderr)
        self.assertNotIn("xxxx", p.stderr)

    def test_lag_in_seconds_while_the_receiver_is_down(self):
        """tpas_webhook_lag_seconds: 0 while the webhook has every uplink; while the
        receiver is down, the age of the oldest uplink it has not accepted (the next one
        once it has taken that), growing; 0 again once the receiver has them all."""
        accepts, lock = {"upto": 1}, threading.Lock()

        def answer(body):
            with lock:
                ok = all(u["seq"] <= accepts["upto"] for u in json.loads(body)["uplinks"])
            return (200 if ok else 503), b""
        mport = free_port()
        t, s = self.sending(self.receiver(answer) + "/hook", 1, 1, b"a",
                            f"[metrics]\nlisten = 127.0.0.1:{mport}\n")

        def lag():
            types, v = parse(http_get(f"http://127.0.0.1:{mport}/metrics")[2],
                             openmetrics=False)
            self.assertEqual(types["tpas_webhook_lag_seconds"], "gauge")
            return v["tpas_webhook_lag_seconds"]

        def sent():
            """Post the next uplink: the monotonic time before and after."""
            before = time.monotonic()
            self.assertEqual(s.uplink(DEV, b"a")[0], 200)
            return before, time.monotonic()

        def check_age(posted):
            """The gauge is the age of the uplink posted then (whole seconds)."""
            start = time.monotonic()
            got = lag()
            self.assertGreaterEqual(got, int(start - posted[1]))
            self.assertLessEqual(got, time.monotonic() - posted[0])
            return got

        wait_for(lambda: t.status()["webhook"]["cursor"] == 1, 20, "seq 1 delivered")
        self.assertIs(t.status()["webhook"]["token"], False)
        self.assertEqual(lag(), 0)
        # The receiver is down: seq 2 waits, then seq 3 too; the age is seq 2's, growing.
        two = sent()
        time.sleep(2)
        three = sent()
        time.sleep(1.5)
        first = check_age(two)
        self.assertGreaterEqual(first, 3)
        time.sleep(1.1)
        self.assertGreater(check_age(two), first)
        # It takes seq 2 only: the age is seq 3's now (seq 2's is 2 s more: out of bounds).
        with lock:
            accepts["upto"] = 2
        wait_for(lambda: t.status()["webhook"]["cursor"] == 2, 20, "seq 2 delivered")
        check_age(three)
        # Back: everything delivered, no lag.
        with lock:
            accepts["upto"] = 10 ** 9
        wait_for(lambda: t.status()["webhook"]["cursor"] == 3, 20, "seq 3 delivered")
        self.assertEqual(lag(), 0)

    def test_a_refusal_says_what_the_receiver_answered(self):
        """A receiver that refuses says why in its answer's body (a wrong path, a bad
        token): its start, as one printable line, is in the reason tpas logs and shows in
        Status's lastError; a long one is cut and marked so. lastError is "" again once
        the receiver takes a POST."""
        answers = [(404, b"no such hook: did you mean /hook?\r\n"),
                   (400, "bad\tbatch \u00e9".encode() + b"x" * 5000)]
        shown, lock = [], threading.Lock()

        def answer(body):
            with lock:
                return answers.pop(0) if answers else (200, b"ok")
        t, _ = self.sending(self.receiver(answer) + "/hok", 1, 1, b"r")
        wait_for(lambda: t.status()["webhook"]["failures"] >= 1, 20, "a refused POST")
        shown.append(t.status()["webhook"]["lastError"])
        self.assertEqual(shown[0], "answered 404: no such hook: did you mean /hook?")
        wait_for(lambda: t.status()["webhook"]["failures"] >= 2, 20, "a second one")
        shown.append(t.status()["webhook"]["lastError"])
        self.assertEqual(shown[1], "answered 400: bad batch ??" + "x" * 108 + "...")
        log = t.log_text()
        self.assertIn("webhook " + t.status()["webhook"]["url"] +
                      ": answered 404: no such hook: did you mean /hook?; retrying", log)
        self.assertIn("REASON=" + shown[1], log)
        wait_for(lambda: t.status()["webhook"]["cursor"] == 1, 20, "the uplink taken")
        self.assertEqual(t.status()["webhook"]["lastError"], "")

    def test_a_refusal_quoting_the_token_does_not_show_it(self):
        """A receiver whose refusal quotes the request's token: lastError and the log
        used to keep it."""
        token = "tpas-" + secrets.token_urlsafe(24)
        path = os.path.join(self.tmp, "webhook-token")
        write_secret(path, token)
        seen, refused = [], []

        def answer(body):
            if not refused:
                refused.append(1)
                return 403, f"token {token} is revoked ({seen[-1]['Authorization']})".encode()
            return 200, b""
        t, _ = self.sending(self.receiver(answer, seen) + "/hook", 1, 1, b"q",
                            f"token-file = {path}\n")
        wait_for(lambda: t.status()["webhook"]["failures"] >= 1, 20, "a refused POST")
        self.assertEqual(t.status()["webhook"]["lastError"],
                         "answered 403: token *** is revoked (Bearer ***)")
        wait_for(lambda: t.status()["webhook"]["cursor"] == 1, 20, "the uplink taken")
        self.assertNotIn(token, t.log_text())
        self.assertIn("answered 403: token *** is revoked", t.log_text())

    def test_a_2xx_with_a_large_body_moves_the_cursor(self):
        """The receiver echoes each batch with 100 KB more: only the status counts."""
        posts, lock = [], threading.Lock()

        def answer(body):
            with lock:
                posts.append([u["seq"] for u in json.loads(body)["uplinks"]])
            return 200, body + b" " * 100000
        t, _ = self.sending(self.receiver(answer) + "/hook", 2, 5, b"e")
        wait_for(lambda: t.status()["webhook"]["cursor"] == 5, 20, "the cursor at 5")
        wh = t.status()["webhook"]
        self.assertEqual((wh["delivered"], wh["failures"], wh["lastError"]), (5, 0, ""))
        with lock:
            self.assertEqual(sum(posts, []), [1, 2, 3, 4, 5])


if __name__ == "__main__":
    unittest.main(verbosity=2)
