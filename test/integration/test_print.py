"""Integration tests of label printing: raw 9100 ZPL printers and a real IPP printer.

The raw printer is a listener here that records each job and answers ~HS as a Zebra
printer does (ready, paper out, head open, or not at all). Its ZPL is drawn by a ZPL
renderer from the npm registry (zpl-renderer-js, installed under the build directory on
first use) and the picture decoded by zbarimg. The IPP printer is CUPS's ippeveprinter
(it needs a D-Bus bus for its DNS-SD client: a private one is started; its media web form
takes the paper out); its spooled PDF
goes through pdftoppm + zbarimg and pdftotext.
"""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, free_port, wait_for

BUILD_ROOT = os.environ.get("BUILD_ROOT", "build")
ZPL_RENDERER = "zpl-renderer-js@3.4.0"

HS_READY = ("\x02030,0,0,0256,000,0,0,0,000,0,0,0\x03\r\n"
            "\x02000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n"
            "\x021234,0\x03\r\n")
HS_PAPER_OUT = HS_READY.replace("030,0,0,", "030,1,0,", 1)
HS_HEAD_OPEN = HS_READY.replace("000,0,0,0,0,2", "000,0,1,0,0,2", 1)


def eui(n):
    return f"70B3D5{n:010X}"


class Listener:
    """A TCP listener on loopback that gives each connection to self.handle, on a thread."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def close(self):
        self.running = False
        # close() alone does not wake the accept() in serve(): it may run on the number
        # of this descriptor after the next listener has taken it, and answer that one's
        # first connection. Wake it (shutdown) and let it return before closing.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()


class RawPrinter(Listener):
    """A raw 9100 printer on loopback: answers ~HS with .status, records jobs."""

    def __init__(self):
        self.status = HS_READY
        self.hang = False
        self.reset_after_job = False  # read the whole job, then reset (SO_LINGER 0)
        self.jobs = []
        self.hs_asked = 0
        self.lock = threading.Lock()
        super().__init__()

    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    def handle(self, conn):
        conn.settimeout(30)
        buf = b""
        try:
            while b"~HS" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            with self.lock:
                self.hs_asked += 1
            if self.hang:
                time.sleep(20)
                return
            head, _, rest = buf.partition(b"~HS")
            conn.sendall(self.status.encode())
            data = rest.lstrip(b"\r\n")
            while True:
                if self.reset_after_job and data.rstrip().endswith(b"^XZ"):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    break
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data:
                with self.lock:
                    self.jobs.append(data.decode())
        except OSError:
            pass
        finally:
            conn.close()


class IppPrinter:
    """CUPS's ippeveprinter on 127.0.0.1, keeping its jobs in a spool directory."""

    def __init__(self, workdir, command="/bin/true"):
        self.spool = os.path.join(workdir, "ipp-spool")
        os.makedirs(self.spool, exist_ok=True)
        self.bus = os.path.join(workdir, "bus")
        self.log = open(os.path.join(workdir, "ippeveprinter.log"), "ab")
        self.dbus = subprocess.Popen(
            ["dbus-daemon", "--session", f"--address=unix:path={self.bus}", "--nofork"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_for(lambda: os.path.exists(self.bus), 10, "the private D-Bus bus")
        self.port = free_port()
        self.command = command
        self.spawn()

    def spawn(self):
        """Start ippeveprinter on self.port and wait until it takes connections."""
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.bus}")
        self.proc = subprocess.Popen(
            # -c: each job "printed" by a command that returns at once; -k keeps the
            # spooled file. Without a command it takes some 7 s per job.
            ["ippeveprinter", "-p", str(self.port), "-d", self.spool, "-k", "-r", "off",
             "-c", self.command, "-f", "application/pdf", "-n", "localhost", "tpadtest"],
            stdout=self.log, stderr=self.log, env=env)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("ippeveprinter exited")
                return False
        wait_for(up, 15, "ippeveprinter")

    def url(self):
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    def restart(self):
        """Power cycle: killed (its jobs in progress with it), started again on its port."""
        self.proc.kill()
        self.proc.wait()
        self.spawn()

    def stop(self):
        for p in (self.proc, self.dbus):
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a test may have stopped it
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.proc = self.dbus = None
        self.log.close()

    def set_media(self, sheets):
        """Load (or take out) the paper, through ippeveprinter's media web form."""
        q = urllib.parse.urlencode({"size1": "na_letter_8.5x11in", "type1": "",
                                    "level1": str(sheets), "size3": "", "type3": "",
                                    "level3": str(sheets)})
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/media?{q}", timeout=10).read()

    def files(self):
        return sorted(os.path.join(self.spool, f) for f in os.listdir(self.spool)
                      if f.endswith(".pdf"))


class DroppingIppPrinter(Listener):
    """An IPP printer on loopback that answers Get-Printer-Attributes (idle, ready) and
    resets the connection as soon as a job's request (chunked, a Print-Job) begins: a
    printer that dies while it is sent a job."""

    def url(self):
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    @staticmethod
    def answer(request_id):
        import struct

        def attr(tag, name, value):
            return (bytes([tag]) + struct.pack(">H", len(name)) + name +
                    struct.pack(">H", len(value)) + value)
        body = (b"\x02\x00\x00\x00" + request_id + b"\x01" +
                attr(0x47, b"attributes-charset", b"utf-8") +
                attr(0x48, b"attributes-natural-language", b"en") + b"\x04" +
                attr(0x23, b"printer-state", struct.pack(">i", 3)) +
                attr(0x44, b"printer-state-reasons", b"none") +
                attr(0x22, b"printer-is-accepting-jobs", b"\x01") + b"\x03")
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def handle(self, conn):
        import struct
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                if b"chunked" in head.lower():
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    return
                if b"100-continue" in head.lower():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                n = int([h.split(b":")[1] for h in head.split(b"\r\n")
                         if h.lower().startswith(b"content-length:")][0])
                while len(buf) < n:
                    buf += conn.recv(65536)
                body, buf = buf[:n], buf[n:]
                conn.sendall(self.answer(body[4:8]))
        except OSError:
            pass
        finally:
            conn.close()


def zpl_renderer():
    """The npm ZPL renderer's directory, installed once under the build directory."""
    d = os.path.abspath(os.path.join(BUILD_ROOT, "npm-zpl"))
    if not os.path.exists(os.path.join(d, "node_modules", "zpl-renderer-js", "package.json")):
        os.makedirs(d, exist_ok=True)
        p = subprocess.run(["npm", "install", "--prefix", d, "--no-audit", "--no-fund",
                            "--cache", os.path.join(d, "cache"), ZPL_RENDERER],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise AssertionError("cannot install the ZPL renderer from npm (the test needs "
                                 f"the npm registry):\n{p.stdout}\n{p.stderr}")
    return d


RENDER_JS = r"""
const { ready } = require("zpl-renderer-js");
const fs = require("fs");
(async () => {
  const { api } = await ready;
  const zpl = fs.readFileSync(process.argv[2], "utf8");
  const labels = await api.zplToBase64MultipleAsync(zpl, +process.argv[4], +process.argv[5], 8);
  labels.forEach((l, i) => fs.writeFileSync(process.argv[3] + "-" + i + ".png",
                                            Buffer.from(l, "base64")));
  console.log(labels.length);
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
"""


def decode_png(path):
    out = subprocess.run(["zbarimg", "--raw", "-q", path], capture_output=True, text=True)
    return out.stdout.strip()


def png_pixels(data):
    """A PNG's width, height and rows of booleans (True: dark) for the 1-bit and 8-bit
    grayscale, unfiltered PNGs tpad writes; anything else fails the test."""
    import struct
    import zlib
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = ihdr[:4]
    assert color == 0 and depth in (1, 8), ihdr
    raw = zlib.decompress(idat)
    stride = (w * depth + 7) // 8
    rows = []
    for y in range(h):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        assert line[0] == 0, "filtered row"
        if depth == 1:
            rows.append([not (line[1 + x // 8] >> (7 - x % 8)) & 1 for x in range(w)])
        else:
            rows.append([b < 128 for b in line[1:]])
    return w, h, rows


def png_write(path, rows):
    """Write rows of booleans (True: dark) as an 8-bit grayscale PNG."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    raw = b"".join(b"\0" + bytes(0 if d else 255 for d in r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" +
                chunk(b"IHDR", struct.pack(">IIBBBBB", len(rows[0]), len(rows), 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def svg_label(svg):
    """An SVG label taken apart: (width, height, the dark rectangles of its path as
    pixels, its <text> contents), with libxml2's rules (the xml module)."""
    import re
    import xml.etree.ElementTree as ET
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg)
    w = int(root.get("width").removesuffix("px"))
    h = int(root.get("height").removesuffix("px"))
    rows = [[False] * w for _ in range(h)]
    for path in root.iter(ns + "path"):
        for x, y, rw, rh in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-\d+z", path.get("d")):
            x, y, rw, rh = int(x), int(y), int(rw), int(rh)
            for yy in range(y, y + rh):
                rows[yy][x:x + rw] = [True] * rw
    texts = [t.text for t in root.iter(ns + "text")]
    return w, h, rows, texts


def dots(mm, dpi):
    """Millimetres to printer dots, rounded as tpad's layout does."""
    return (int(mm * 10) * dpi + 127) // 254


class Print(TpadTestCase):
    def setUp(self):
        super().setUp()
        self.raw = RawPrinter()
        self.ipp = None

    def tearDown(self):
        self.raw.close()
        if self.ipp:
            self.ipp.stop()
        super().tearDown()

    def start(self, printers, conf_extra="", default="line1", start=True):
        import secrets
        psk = secrets.token_hex(16)
        self.s = self.sim(psk).start()
        self.d = self.daemon(upstream_url=self.s.url(), psk_hex=psk,
                             conf_extra=conf_extra + (f"\nprint.default = {default}"
                                                      if default else ""))
        with open(self.d.conf, "a") as f:
            f.write(printers)
        if start:
            self.d.start()
            wait_for(self.upstream_ready, 15, "warm upstream sessions")
        return self.d

    def upstream_ready(self):
        with self.d.admin_client() as a:
            up = a.call("io.tpad.Admin.Status")["upstream"]
        return all(s["state"] == "ready" for s in up["sessions"])

    def raw_section(self, name="line1", url=None, extra=""):
        return f"[printer.{name}]\nurl = {url or self.raw.url()}\ntimeout = 2s\n{extra}\n"

    def activate(self, dev, **kw):
        with self.d.station_client() as c:
            return c.call("io.tpad.Station.Activate", {"devEUI": dev, **kw})

    def call_err(self, client, method, params):
        with client as c:
            with self.assertRaises(VarlinkError) as cm:
                c.call(method, params)
        return cm.exception

    def render_zpl(self, zpl, name):
        d = zpl_renderer()
        js = os.path.join(d, "render.js")
        with open(js, "w") as f:
            f.write(RENDER_JS)
        src = os.path.join(self.tmp, name + ".zpl")
        with open(src, "w") as f:
            f.write(zpl)
        out = os.path.join(self.tmp, name)
        p = subprocess.run(["node", js, src, out, "57", "32"], capture_output=True, text=True,
                           timeout=120, cwd=d)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [decode_png(f"{out}-{i}.png") for i in range(int(p.stdout.strip()))]

    def jobs(self, n):
        """The raw printer's jobs once it has n: a reply comes when the last byte is sent,
        the listener files the job when it reads the end."""
        wait_for(lambda: len(self.raw.jobs) >= n, 10, f"{n} raw jobs")
        time.sleep(0.05)
        self.assertEqual(len(self.raw.jobs), n)
        return self.raw.jobs

    def audit(self, dev):
        with self.d.admin_client() as a:
            return [e["outcome"] for e in a.call("io.tpad.Admin.GetDevice",
                                                 {"devEUI": dev})["audit"]]

    def test_raw_activation_prints_the_label(self):
        self.start(self.raw_section(), conf_extra="label.caption-3 = Made by ACME")
        r = self.activate(eui(1), generateAppKey=True, serial="SN-77", print={})
        dev = r["device"]
        self.assertEqual(r["print"]["printer"], "line1")
        self.assertEqual(r["print"]["state"], "printed")
        self.assertGreater(r["print"]["job"], 0)
        zpl = self.jobs(1)[0]
        self.assertIn("^BQN,2,", zpl)
        self.assertIn("^FDMA," + dev["qrText"] + "^FS", zpl)
        self.assertIn("^FD" + eui(1) + "^FS", zpl)
        self.assertIn("^FDSN-77^FS", zpl)
        self.assertIn("^FDMade by ACME^FS", zpl)
        # The printer's picture of it decodes to the device's TR005 text.
        self.assertEqual(self.render_zpl(zpl, "one"), [dev["qrText"]])
        # The station's ZPL preview is the very same label.
        with self.d.station_client() as c:
            look = c.call("io.tpad.Station.Lookup", {"devEUI": eui(1), "qr": {"format": "zpl"}})
        self.assertEqual(base64.b64decode(look["qr"]["data"]).decode(), zpl)
        # And its PNG preview with label: true: the same layout, decodable.
        with self.d.station_client() as c:
            look = c.call("io.tpad.Station.Lookup",
                          {"devEUI": eui(1), "qr": {"format": "png", "label": True}})
        path = os.path.join(self.tmp, "preview.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(look["qr"]["data"]))
        self.assertEqual(decode_png(path), dev["qrText"])
        wait_for(lambda: f"printed on line1 job {r['print']['job']}" in self.audit(eui(1)), 10,
                 "the print's audit row")
        # The print is an event of its own in the log (MESSAGE_ID under journald).
        self.assertRegex(self.d.log_text_all(),
                         rf"print job {r['print']['job']} to line1: 1 label sent "
                         r"PRINTER=line1 JOB=\d+ LABELS=1 OUTCOME=printed SEND_MS=")
        # Copies ride in one job as ^PQ.
        r = self.activate(eui(1), print={"copies": 3})
        self.assertIn("^PQ3\n", self.jobs(2)[-1])
        with self.d.admin_client() as a:
            st = a.call("io.tpad.Admin.Status")["printers"][0]
            metrics = a.call("io.tpad.Admin.Metrics")["text"]
        self.assertEqual((st["name"], st["state"], st["ready"]), ("line1", "idle", True))
        self.assertEqual(st["jobs"]["printed"], 2)
        self.assertIn('tpad_print_jobs_total{printer="line1",outcome="printed"} 2', metrics)
        self.assertIn('tpad_printer_ready{printer="line1"} 1', metrics)

    def test_a_template_not_all_alphanumeric_prints_a_code_that_reads(self):
        """The printer encodes a ZPL code itself (^BQ's automatic mode), perhaps all in byte
        mode where tpad's own code mixes modes: the layout leaves room for the larger, so
        the printed code stays on the label and reads (it ran over the captions and off
        the label, and no scanner read it)."""
        self.start(self.raw_section(),
                   conf_extra="qr.template = ACME:{devEUI}:{joinEUI}:{profileId}:"
                              "{ownerToken}:{serial}:{{x}}")
        r = self.activate(eui(40), generateAppKey=True, serial="SN1", print={})
        self.assertEqual(r["print"]["state"], "printed")
        zpl = self.jobs(1)[0]
        self.assertEqual(self.render_zpl(zpl, "mixed"), [r["device"]["qrText"]])

    def test_a_printer_that_resets_after_the_job_may_have_printed_it(self):
        """A raw printer that reads the whole job and resets the connection at once: its
        acknowledgements may not reach tpad first. The failure says the label may have
        printed (it said the bytes were not taken, and the advised reprint printed a
        second label)."""
        self.start(self.raw_section())
        self.raw.reset_after_job = True
        failed = 0
        for i in range(5):  # the reset usually wins the race with the acknowledgements
            try:
                r = self.activate(eui(41 + i), generateAppKey=True, print={})
                self.assertEqual(r["print"]["state"], "printed")  # they came first
            except VarlinkError as e:
                self.assertEqual(e.error, "io.tpad.Station.PrintFailed", e.params)
                self.assertIn("the label may have printed", e.params["reason"])
                self.assertNotIn("not taken", e.params["reason"])
                failed += 1
            self.assertEqual(len(self.jobs(i + 1)), i + 1)  # every job reached the printer
        self.assertGreater(failed, 0)

    def test_paper_out_then_reprint(self):
        self.start(self.raw_section())
        self.raw.status = HS_PAPER_OUT
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate",
                   {"devEUI": eui(2), "generateAppKey": True, "print": {}})
            reply = c.recv()
        self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
        p = reply["parameters"]
        self.assertEqual(p["printer"], "line1")
        self.assertEqual(p["reason"], "paper out")
        # The activation itself succeeded: the committed record rides in the error.
        self.assertRegex(p["device"]["ownerToken"], r"^[0-9A-F]+$")
        self.assertRegex(p["device"]["appKey"], r"^[0-9A-F]{32}$")
        self.assertEqual(p["device"]["state"], "ISSUED")
        self.assertEqual(self.raw.jobs, [])
        with self.d.admin_client() as a:
            st = a.call("io.tpad.Admin.Status")["printers"][0]
        self.assertEqual((st["state"], st["ready"], st["reasons"]),
                         ("stopped", False, "paper out"))
        self.d.wait_notify("paper out", 10)
        # Head open too, through the admin's reprint.
        self.raw.status = HS_HEAD_OPEN
        e = self.call_err(self.d.admin_client(), "io.tpad.Admin.Print", {"devEUI": eui(2)})
        self.assertEqual(e.error, "io.tpad.Admin.PrintFailed")
        self.assertEqual(e.params["reason"], "head open")
        # The Python station client: PrintFailed carries the committed device.
        sys.path.insert(0, os.path.join(tpadtest.SRC_ROOT, "client", "python"))
        import tpad_client
        with tpad_client.Client(self.d.station) as tc:
            with self.assertRaises(tpad_client.PrintFailed) as cm:
                tc.lookup(eui(2), print_to=True)
        self.assertEqual(cm.exception.device.owner_token, p["device"]["ownerToken"])
        self.assertEqual((cm.exception.printer, cm.exception.reason), ("line1", "head open"))
        # Paper back: the station's reprint (Lookup) prints; nothing went to the cloud again.
        self.raw.status = HS_READY
        with self.d.station_client() as c:
            r = c.call("io.tpad.Station.Lookup", {"devEUI": eui(2), "print": {}})
        self.assertEqual(r["print"]["state"], "printed")
        self.assertEqual(r["device"]["ownerToken"], p["device"]["ownerToken"])
        self.jobs(1)
        self.assertEqual(self.s.counters()["imports"], 1)
        with tpad_client.Client(self.d.station) as tc:
            dev = tc.lookup(eui(2), print_to="line1", print_copies=2, qr_format="png",
                            qr_label=True)
        self.assertEqual((dev.printed["printer"], dev.printed["state"]), ("line1", "printed"))
        self.assertIn("^PQ2", self.jobs(2)[-1])
        # Audit rows ride in the store's next commit.
        audit = wait_for(lambda: (lambda a: a if any(x.startswith("printed on") for x in a)
                                  else None)(self.audit(eui(2))), 10, "the audit rows")
        self.assertTrue(any(a.startswith("print failed on line1") and "paper out" in a
                            for a in audit), audit)
        self.assertTrue(any("head open" in a for a in audit), audit)
        self.assertTrue(any(a.startswith("printed on line1 job") for a in audit), audit)

    def test_a_printer_section_added_or_removed_is_named_on_sighup(self):
        """Printers are read at start: SIGHUP names a [printer.NAME] added or removed
        (with the section last in the configuration, neither was said), and a printer's
        changed key by its whole name."""
        self.start(self.raw_section() + self.raw_section("line2"))
        with open(self.d.conf) as f:
            conf = f.read()
        with open(self.d.conf, "w") as f:
            f.write(conf.replace(self.raw_section("line2"), "")
                    .replace("timeout = 2s", "timeout = 3s")
                    + self.raw_section("line3"))
        self.d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in self.d.log_text_all(), 5, "the reload")
        log = self.d.log_text_all()
        self.assertIn("SIGHUP: [printer.line2] removed; it takes effect at the next start", log)
        self.assertIn("SIGHUP: [printer.line3] added; it takes effect at the next start", log)
        self.assertIn("SIGHUP: printer.line1.timeout changed", log)
        self.assertNotIn("printer.line3.", log)
        self.assertNotIn("printer.line2.", log)

    def test_a_printer_named_where_none_is_configured(self):
        self.start("", default=None)
        e = self.call_err(self.d.station_client(), "io.tpad.Station.Activate",
                          {"devEUI": eui(90), "generateAppKey": True,
                           "print": {"printer": "line1"}})
        self.assertEqual(e.error, "io.tpad.Station.InvalidParameter")
        self.assertEqual(e.params["reason"],
                         "no printer named 'line1' (tpad.conf has no [printer.NAME] section)")
        self.assertEqual(self.s.counters()["imports"], 0)

    def test_a_printer_name_that_does_not_resolve_is_named_so(self):
        """An IPP printer whose host name does not resolve: the reason says the name, not
        the route ("No route to host" sent admins to the network), as a raw printer's does."""
        host = "no-such-printer.invalid"
        t0 = time.monotonic()
        try:
            socket.getaddrinfo(host, 631)
            self.skipTest(f"{host} resolves here")
        except socket.gaierror:
            pass
        if time.monotonic() - t0 > 1.5:
            self.skipTest("this machine's resolver does not answer in time")
        self.start(self.raw_section() +
                   self.raw_section("ippdead", url=f"ipp://{host}/ipp/print") +
                   self.raw_section("rawdead", url=f"socket://{host}:9100"))
        for i, printer in enumerate(("ippdead", "rawdead")):
            e = self.call_err(self.d.station_client(), "io.tpad.Station.Activate",
                              {"devEUI": eui(90 + i), "generateAppKey": True,
                               "print": {"printer": printer}})
            self.assertEqual(e.error, "io.tpad.Station.PrintFailed")
            self.assertIn("cannot resolve the printer's host", e.params["reason"], printer)
            self.assertNotIn("No route to host", e.params["reason"])

    def test_unreachable_and_unknown_printers(self):
        dead = free_port()
        self.start(self.raw_section() +
                   self.raw_section("gone", url=f"socket://127.0.0.1:{dead}"))
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate",
                   {"devEUI": eui(3), "generateAppKey": True, "print": {"printer": "gone"}})
            reply = c.recv()
        self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
        self.assertIn("Connection refused", reply["parameters"]["reason"])
        self.assertEqual(reply["parameters"]["device"]["devEUI"], eui(3))
        # tpactl shows the device, then why the label is missing and how to reprint it,
        # so that the station's operator does not activate again.
        p = self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", eui(3),
                          "--printer", "gone", check=1)
        self.assertIn(reply["parameters"]["device"]["ownerToken"], p.stdout)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 2, p.stderr)
        self.assertTrue(lines[0].startswith("tpactl: PrintFailed: printer=gone"), lines[0])
        self.assertIn("The device is ISSUED and its token is valid", lines[1])
        self.assertIn(f"tpactl lookup --dev-eui {eui(3)} --printer gone", lines[1])
        # An unknown printer: refused before anything starts.
        e = self.call_err(self.d.station_client(), "io.tpad.Station.Activate",
                          {"devEUI": eui(4), "generateAppKey": True,
                           "print": {"printer": "nope"}})
        self.assertEqual(e.error, "io.tpad.Station.InvalidParameter")
        self.assertEqual(e.params["parameter"], "print.printer")
        # The reason lists the printers there are, and the one a typo meant.
        self.assertEqual(e.params["reason"],
                         "no printer named 'nope' (tpad.conf has line1, gone)")
        self.assertEqual(self.s.counters()["imports"], 1)
        p = self.d.tpactl("--socket", self.d.admin, "print", eui(3), "--printer", "lin1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no printer named 'lin1' (did you mean 'line1'? tpad.conf has line1, "
                      "gone)", p.stderr)
        # Reprint on the working printer with tpactl.
        p = self.d.tpactl("--socket", self.d.admin, "print", eui(3), check=0)
        self.assertIn("printed 1 label on line1", p.stdout)
        p = self.d.tpactl("--socket", self.d.admin, "status", check=7)
        self.assertIn("printer:     gone", p.stdout)
        self.assertIn("unreachable", p.stdout)
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_a_printer_that_answers_text_to_hs_fails_at_once(self):
        """Something that answers ~HS with lines of text (not a Zebra printer) fails the job
        as soon as the first line is in, not at printer.timeout as a timeout."""
        self.start(self.raw_section())
        self.raw.status = "?? unknown command\r\n"
        t0 = time.monotonic()
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate",
                   {"devEUI": eui(6), "generateAppKey": True, "print": {}})
            reply = c.recv()
        self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
        self.assertIn("not ZPL host status", reply["parameters"]["reason"])
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(self.raw.jobs, [])

    def check_whole_png(self, data, dev, name):
        """data is the whole label of dev: label.width x label.height at label.dpi, its
        code decodes to the TR005 text, and the region right of the code has the captions'
        ink (the bare code has none there)."""
        w, h, rows = png_pixels(data)
        self.assertEqual((w, h), (dots(57, 203), dots(32, 203)))
        path = os.path.join(self.tmp, name + ".png")
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(decode_png(path), dev["qrText"])
        # The code is a square of at most h dots at the left; captions are right of it.
        ink = sum(r[x] for r in rows for x in range(h, w))
        self.assertGreater(ink, 200, "no captions right of the code")
        return rows

    def check_pdf(self, pdf, dev, texts, name):
        """pdf is dev's whole label: one page of 57 x 32 mm, drawn at 203 dpi by pdftoppm
        it decodes to the TR005 text, and pdftotext reads the captions."""
        self.assertEqual(pdf[:5], b"%PDF-")
        path = os.path.join(self.tmp, name + ".pdf")
        with open(path, "wb") as f:
            f.write(pdf)
        info = subprocess.run(["pdfinfo", path], capture_output=True, text=True,
                              check=True).stdout
        self.assertIn("Pages:           1", info)
        # 57 x 32 mm in points, as cairo rounds the dots: 456 x 256 dots at 203 dpi.
        self.assertRegex(info, r"Page size:\s+161\.73\d* x 90\.79\d* pts")
        subprocess.run(["pdftoppm", "-r", "203", "-png", "-singlefile", path,
                        os.path.join(self.tmp, name + "-pdf")], check=True)
        self.assertEqual(decode_png(os.path.join(self.tmp, name + "-pdf.png")), dev["qrText"])
        text = subprocess.run(["pdftotext", path, "-"], capture_output=True, text=True,
                              check=True).stdout.split("\n")
        for t in texts:
            self.assertIn(t, text)

    def test_images_are_the_whole_label(self):
        self.start(self.raw_section(), conf_extra="label.caption-3 = Made by ACME & Co <1>")
        r = self.activate(eui(30), generateAppKey=True, serial="SN-CAP-1",
                          qr={"format": "png"})
        dev = r["device"]
        act_png = base64.b64decode(r["qr"]["data"])
        act_rows = self.check_whole_png(act_png, dev, "activate")
        with self.d.station_client() as c:
            look = c.call("io.tpad.Station.Lookup", {"devEUI": eui(30), "qr": {"format": "png"}})
            look_png = base64.b64decode(look["qr"]["data"])
            # The cached image: the same label.
            self.assertEqual(png_pixels(look_png)[2], act_rows)
            svg = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "svg"}})["qr"]["data"]).decode()
            bare = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "png", "label": False, "scale": 3,
                                          "margin": 2}})["qr"]["data"])
            again = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "png"}})["qr"]["data"])
        self.check_whole_png(look_png, dev, "lookup")
        # SVG: the same size in dots, the same code (its path decodes), captions as text.
        w, h, rows, texts = svg_label(svg)
        self.assertEqual((w, h), (dots(57, 203), dots(32, 203)))
        self.assertEqual(texts, [eui(30), "SN-CAP-1", "Made by ACME & Co <1>"])
        png_write(os.path.join(self.tmp, "svg.png"), rows)
        self.assertEqual(decode_png(os.path.join(self.tmp, "svg.png")), dev["qrText"])
        # The SVG's modules are the PNG's, dot for dot (up to the code's right edge).
        right = max(max((x for x, d in enumerate(r) if d), default=0) for r in rows) + 1
        self.assertEqual([r[:right] for r in rows], [r[:right] for r in act_rows])
        # label: false is the bare code: square, (modules + 2 * 2) * 3 pixels, no captions.
        bw, bh, brows = png_pixels(bare)
        self.assertEqual(bw, bh)
        self.assertEqual(bw % 3, 0)
        with open(os.path.join(self.tmp, "bare.png"), "wb") as f:
            f.write(bare)
        self.assertEqual(decode_png(os.path.join(self.tmp, "bare.png")), dev["qrText"])
        # Asking for the bare code did not replace the stored whole label.
        self.assertEqual(png_pixels(again)[2], act_rows)
        # The printer's ZPL carries the same captions.
        with self.d.station_client() as c:
            zpl = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "zpl"}})["qr"]["data"]).decode()
        for t in texts:
            self.assertIn("^FD" + t + "^FS", zpl)
        # PDF: one page of the label's size (57 x 32 mm), its code decodes, its captions
        # are text; the same from Activate, Lookup and Export.
        with self.d.station_client() as c:
            pdf = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "pdf"}})["qr"]["data"])
        self.check_pdf(pdf, dev, texts, "lookup")
        # Export: PNG, SVG and PDF are the same whole label by default; --code the bare code.
        for fmt in ("png", "svg", "pdf"):
            out = os.path.join(self.tmp, "export-" + fmt)
            self.d.tpactl("--socket", self.d.admin, "export", "--format", fmt, "--out", out,
                          check=0)
            with open(os.path.join(out, eui(30) + "." + fmt), "rb") as f:
                data = f.read()
            if fmt == "png":
                self.assertEqual(png_pixels(data)[2], act_rows)
            elif fmt == "svg":
                self.assertEqual(svg_label(data.decode())[3], texts)
            else:
                self.check_pdf(data, dev, texts, "export")
        out = os.path.join(self.tmp, "export-code")
        self.d.tpactl("--socket", self.d.admin, "export", "--format", "png", "--code",
                      "--out", out, check=0)
        with open(os.path.join(out, eui(30) + ".png"), "rb") as f:
            w, h, _ = png_pixels(f.read())
        self.assertEqual(w, h)
        # tpactl lookup writes the whole label; --code the bare one.
        p = os.path.join(self.tmp, "ctl.png")
        self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", eui(30), "-o", p,
                      check=0)
        with open(p, "rb") as f:
            self.assertEqual(png_pixels(f.read())[2], act_rows)
        self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", eui(30), "--code",
                      "-o", p, check=0)
        with open(p, "rb") as f:
            w, h, _ = png_pixels(f.read())
        self.assertEqual(w, h)
        # A changed layout (wider label, other captions) on the same store: the stored
        # image no longer matches and the label is drawn anew.
        self.d.stop()
        with open(self.d.conf) as f:
            conf = f.read()
        self.assertIn("\ncaption-3 = Made by ACME & Co <1>\n", conf)
        conf = conf.replace("\ncaption-3 = Made by ACME & Co <1>\n",
                            "\ncaption-3 = Lot 7\nwidth = 60\n")
        with open(self.d.conf, "w") as f:
            f.write(conf)
        self.d.start()
        with self.d.station_client() as c:
            look = c.call("io.tpad.Station.Lookup", {"devEUI": eui(30), "qr": {"format": "png"}})
            svg = base64.b64decode(c.call("io.tpad.Station.Lookup", {
                "devEUI": eui(30), "qr": {"format": "svg"}})["qr"]["data"]).decode()
        w, h, _ = png_pixels(base64.b64decode(look["qr"]["data"]))
        self.assertEqual((w, h), (dots(60, 203), dots(32, 203)))
        self.assertEqual(svg_label(svg)[3], [eui(30), "SN-CAP-1", "Lot 7"])

    def test_label_images_code(self):
        # label.images = code: stations written for the bare code get it unless they ask.
        self.start(self.raw_section(), conf_extra="label.images = code")
        r = self.activate(eui(31), generateAppKey=True, qr={"format": "png"})
        w, h, _ = png_pixels(base64.b64decode(r["qr"]["data"]))
        self.assertEqual(w, h)
        with self.d.station_client() as c:
            look = c.call("io.tpad.Station.Lookup",
                          {"devEUI": eui(31), "qr": {"format": "png", "label": True}})
        self.check_whole_png(base64.b64decode(look["qr"]["data"]), r["device"], "asked")

    def test_batch_is_one_job(self):
        self.start(self.raw_section(), default="")
        devs = [eui(10 + i) for i in range(5)]
        for d in devs:
            self.activate(d, generateAppKey=True, serial=f"B-{d[-3:]}")
        with self.d.admin_client() as a:
            r = a.call("io.tpad.Admin.Print", {"state": "issued", "printer": "line1"})
            # No printer named and no default: a clear error.
            with self.assertRaises(VarlinkError) as cm:
                a.call("io.tpad.Admin.Print", {"state": "ISSUED"})
            self.assertEqual(cm.exception.params["parameter"], "printer")
            texts = {}
            for d in devs:
                texts[d] = a.call("io.tpad.Admin.GetDevice", {"devEUI": d})["device"]["qrText"]
        self.assertEqual((r["labels"], r["state"]), (5, "printed"))
        zpl = self.jobs(1)[0]
        self.assertEqual(zpl.count("^XA"), 5)
        self.assertEqual(sorted(self.render_zpl(zpl, "batch")), sorted(texts.values()))
        for d in devs:
            wait_for(lambda: f"printed on line1 job {r['job']}" in self.audit(d), 10,
                     "the batch's audit rows")
        # Export writes the very labels the printer got: same layout, same captions.
        out = os.path.join(self.tmp, "export")
        self.d.tpactl("--socket", self.d.admin, "export", "--format", "zpl", "--out", out,
                      check=0)
        labels = zpl.replace("^XZ\n^XA", "^XZ\n\0^XA").split("\0")
        for d in devs:
            with open(os.path.join(out, d + ".zpl")) as f:
                self.assertIn(f.read(), labels)
        out = os.path.join(self.tmp, "export-png")
        self.d.tpactl("--socket", self.d.admin, "export", "--format", "png", "--label",
                      "--out", out, check=0)
        self.assertEqual(decode_png(os.path.join(out, devs[0] + ".png")), texts[devs[0]])
        p = self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", devs[1], "--label",
                          "-o", os.path.join(self.tmp, "l.svg"), check=0)
        with open(os.path.join(self.tmp, "l.svg")) as f:
            self.assertIn('width="456px" height="256px"', f.read())
        # The extension picks the format in any case (a Windows share's LABEL.ZPL).
        for name, start in (("L.SVG", b"<?xml"), ("L.Zpl", b"^XA"), ("L.PDF", b"%PDF")):
            self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", devs[1],
                          "--label", "-o", os.path.join(self.tmp, name), check=0)
            with open(os.path.join(self.tmp, name), "rb") as f:
                self.assertTrue(f.read().startswith(start), name)
        for bad in (" 2", "+2"):
            p = self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", devs[1],
                              "--code", "--scale", bad, check=2)
            self.assertIn(f"--scale needs a whole number, not '{bad}'", p.stderr)
        for bad in ("0", "21"):
            p = self.d.tpactl("--socket", self.d.station, "lookup", "--dev-eui", devs[1],
                              "--code", "--scale", bad, check=2)
            self.assertIn(f"--scale must be 1 to 20, not '{bad}'", p.stderr)
        # A station without a printer of its own and no default must name one.
        e = self.call_err(self.d.station_client(), "io.tpad.Station.Lookup",
                          {"devEUI": devs[0], "print": {}})
        self.assertEqual(e.params["parameter"], "print.printer")

    def test_a_batch_in_parts(self):
        """Admin.Print's limit and after print a batch in parts, in DevEUI order; each reply
        names its last DevEUI and whether more are left; tpactl says how to go on."""
        self.start(self.raw_section())
        devs = [eui(70 + i) for i in range(5)]
        for d in devs:
            self.activate(d, generateAppKey=True)
        parts, after = [], None
        with self.d.admin_client() as a:
            while True:
                r = a.call("io.tpad.Admin.Print", {"state": "issued", "limit": 2,
                                                   **({"after": after} if after else {})})
                parts.append((r["labels"], r["last"], r["more"]))
                after = r["last"]
                if not r["more"]:
                    break
            with self.assertRaises(VarlinkError) as e:
                a.call("io.tpad.Admin.Print", {"devEUI": devs[0], "limit": 2})
            self.assertEqual(e.exception.params["parameter"], "limit")
        self.assertEqual(parts, [(2, devs[1], True), (2, devs[3], True), (1, devs[4], False)])
        jobs = self.jobs(3)
        for i, d in enumerate(devs):
            self.assertIn(f"^FD{d}^FS", jobs[i // 2])
        p = self.d.tpactl("--socket", self.d.admin, "print", "--state", "issued", "--limit",
                          "3", check=0)
        self.assertIn(f"printed 3 labels on line1", p.stdout)
        self.assertIn(f"more to print: tpactl print --state issued --after {devs[2]}", p.stdout)
        p = self.d.tpactl("--socket", self.d.admin, "print", "--state", "issued", "--after",
                          devs[2], "--limit", "3", check=0)
        self.assertIn(f"printed 2 labels on line1 (job", p.stdout)
        self.assertIn(f"the last {devs[4]}", p.stdout)
        self.assertNotIn("more to print", p.stdout)
        # After the last part: the batch is done, said of after, not of the state.
        p = self.d.tpactl("--socket", self.d.admin, "print", "--state", "issued", "--after",
                          devs[4], "--limit", "3", check=1)
        self.assertIn(f"parameter=after, reason=no device in this state after {devs[4]} has "
                      "a label to print: the batch is done", p.stderr)

    def test_hung_printer_delays_no_other_station(self):
        self.start(self.raw_section())

        def latencies(n, base):
            out = [None] * n

            def one(i):
                t0 = time.monotonic()
                self.activate(eui(base + i), generateAppKey=True)
                out[i] = (time.monotonic() - t0) * 1000
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return out

        before = latencies(20, 100)
        self.raw.hang = True
        result = {}

        def printing():
            with self.d.station_client() as c:
                c.send("io.tpad.Station.Activate",
                       {"devEUI": eui(99), "generateAppKey": True, "print": {}})
                result["reply"] = c.recv()
                result["at"] = time.monotonic()
        t = threading.Thread(target=printing)
        t.start()
        wait_for(lambda: self.raw.hs_asked, 5, "the print job to reach the hung printer")
        t0 = time.monotonic()
        during = latencies(20, 200)
        others_done = time.monotonic()
        t.join(10)
        # All 20 were answered while the printing station still waited for its printer.
        self.assertLess(others_done, result["at"])
        self.assertEqual(result["reply"]["error"], "io.tpad.Station.PrintFailed")
        self.assertIn("timed out", result["reply"]["parameters"]["reason"])
        self.assertGreater(result["at"] - t0, 1.0)
        med_b, med_d = statistics.median(before), statistics.median(during)
        print(f"20 activations: median {med_b:.1f} ms (max {max(before):.1f}) idle printer, "
              f"{med_d:.1f} ms (max {max(during):.1f}) while a printer hangs")
        # The hung printer holds one station for its 2 s timeout; the others never wait.
        self.assertLess(max(during), 1000)
        self.assertLess(med_d, med_b + 100)

    def test_a_serial_too_long_for_the_printers_label_is_refused_first(self):
        """The main label is wide enough for a serial, the printer's own label is not: an
        Activate that prints there is refused before anything is issued (it was issued,
        then PrintFailed); without printing it is taken."""
        self.start(self.raw_section(extra="width = 57\n"),
                   conf_extra="label.width = 90\nlabel.caption-2 = {serial}")
        serial = "S" * 22
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(30), generateAppKey=True, serial=serial, print={})
        self.assertEqual(e.exception.error, "io.tpad.Station.InvalidParameter")
        self.assertEqual(e.exception.params["parameter"], "serial")
        self.assertIn("too long for printer line1's label", e.exception.params["reason"])
        self.assertEqual(self.s.counters()["imports"], 0)
        self.assertEqual(self.activate(eui(31), generateAppKey=True,
                                       serial=serial)["device"]["serial"], serial)

    def test_a_serial_that_makes_the_code_larger_is_refused_first(self):
        """A 36-character serial fits beside the code of a typical label text, but its own
        text needs a code one version larger, which leaves less room: refused before the
        device is issued (it was issued, then the label could never print)."""
        self.start(self.raw_section())
        serial = "AAAAAA" + "." * 30
        for kw in ({"print": {}}, {}):
            with self.assertRaises(VarlinkError) as e:
                self.activate(eui(32), generateAppKey=True, serial=serial, **kw)
            self.assertEqual(e.exception.error, "io.tpad.Station.InvalidParameter")
            self.assertEqual(e.exception.params["parameter"], "serial")
            self.assertIn("label.caption-2", e.exception.params["reason"])
        self.assertEqual(self.s.counters()["imports"], 0)
        self.assertEqual(self.raw.jobs, [])
        # Four characters fewer: the code keeps its size, and the label prints.
        r = self.activate(eui(33), generateAppKey=True, serial=serial[:32], print={})
        self.assertEqual(r["print"]["state"], "printed")
        self.assertIn(f"^FD{serial[:32]}^FS", self.jobs(1)[0])

    def printer_status(self, name):
        with self.d.admin_client() as a:
            st = a.call("io.tpad.Admin.Status")["printers"]
            metrics = a.call("io.tpad.Admin.Metrics")["text"]
        return [p for p in st if p["name"] == name][0], metrics

    def test_a_hung_ipp_printer_is_unreachable(self):
        """An IPP printer that takes connections and never answers (stopped): the job fails
        within printer.timeout and Status, the metrics and STATUS= say it is unreachable;
        also when tpad starts while it hangs (it said ready, or unknown, for ever)."""
        self.ipp = IppPrinter(self.tmp)
        self.start(f"[printer.office]\nurl = {self.ipp.url()}\ntimeout = 2s\n"
                   "status-interval = 1s\n", default="office", start=False)
        os.kill(self.ipp.proc.pid, signal.SIGSTOP)
        self.d.start()
        wait_for(lambda: self.printer_status("office")[0]["state"] == "unreachable", 10,
                 "the first status question to find the printer hung")
        st, metrics = self.printer_status("office")
        self.assertFalse(st["ready"])
        self.assertIn("did not answer", st["reasons"])
        self.assertIn('tpad_printer_ready{printer="office"} 0', metrics)
        self.d.wait_notify("office the printer did not answer", 10)
        # Back: ready again; then hung while ready: the job's failure says so at once.
        os.kill(self.ipp.proc.pid, signal.SIGCONT)
        wait_for(lambda: self.printer_status("office")[0]["ready"], 10, "the printer back")
        os.kill(self.ipp.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate",
                   {"devEUI": eui(40), "generateAppKey": True, "print": {}})
            reply = c.recv()
        took = time.monotonic() - t0
        self.assertEqual(reply.get("error"), "io.tpad.Station.PrintFailed", reply)
        # The directive to raise is named as it is written in tpad.conf.
        self.assertIn("did not answer", reply["parameters"]["reason"])
        self.assertIn("within printer.office.timeout", reply["parameters"]["reason"])
        # printer.timeout bounds the whole job (it took 4 s of a 3 s timeout).
        self.assertLess(took, 2.6)
        st, metrics = self.printer_status("office")
        self.assertEqual((st["state"], st["ready"]), ("unreachable", False))
        self.assertIn('tpad_printer_ready{printer="office"} 0', metrics)

    def test_jobs_queued_on_a_hung_printer_share_its_timeout(self):
        """Three stations print at once on a raw printer that hangs: each job's
        printer.timeout counts from its submission, so all three fail about 2 s after they
        asked (the third waited 6 s); another printer prints meanwhile."""
        other = RawPrinter()
        self.addCleanup(other.close)
        self.start(self.raw_section() + self.raw_section("line2", url=other.url()))
        self.raw.hang = True
        results = [None] * 3

        def one(i):
            t0 = time.monotonic()
            with self.d.station_client() as c:
                c.send("io.tpad.Station.Activate",
                       {"devEUI": eui(50 + i), "generateAppKey": True, "print": {}})
                reply = c.recv()
            results[i] = (reply, time.monotonic() - t0)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        wait_for(lambda: self.raw.hs_asked, 5, "the first job at the hung printer")
        r = self.activate(eui(60), generateAppKey=True, print={"printer": "line2"})
        self.assertEqual(r["print"]["state"], "printed")
        for t in ts:
            t.join(15)
        # Each timed out at the printer or, with nothing left of its time, in the queue.
        for (reply, took) in results:
            self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
            self.assertIn("timed out", reply["parameters"]["reason"])
            self.assertNotIn("printer.timeout", reply["parameters"]["reason"])
            self.assertLess(took, 3.0, [r["parameters"]["reason"] for r, _ in results])

    def test_jobs_queued_behind_a_slow_healthy_printer_are_printed(self):
        """An IPP printer that takes each job and prints it slowly (3 s; followed for
        printer.timeout, 2 s): a job queued behind it had used up its time while waiting
        and failed unsent, though the printer was fine. A job now starts with a whole
        timeout on a printer that answered its last job."""
        slow = os.path.join(self.tmp, "slow.sh")
        with open(slow, "w") as f:
            f.write("#!/bin/sh\nsleep 3\n")
        os.chmod(slow, 0o755)
        self.ipp = IppPrinter(self.tmp, command=slow)
        self.start(f"[printer.office]\nurl = {self.ipp.url()}\ntimeout = 2s\n",
                   default="office")
        results = [None] * 2

        def one(i):
            with self.d.station_client(timeout=30) as c:
                c.send("io.tpad.Station.Activate",
                       {"devEUI": eui(70 + i), "generateAppKey": True, "print": {}})
                results[i] = c.recv()
        ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
            time.sleep(0.2)
        for t in ts:
            t.join(30)
        for reply in results:
            self.assertNotIn("error", reply, reply)
            self.assertEqual(reply["parameters"]["print"]["state"], "printed")

    def test_an_ipp_printer_that_drops_the_job_lost_the_connection(self):
        """The printer resets the connection while it is sent the job: the reason says the
        connection was lost (it said the printer refused the job: Broken pipe) and Status
        shows the printer unreachable."""
        drop = DroppingIppPrinter()
        self.addCleanup(drop.close)
        self.start(f"[printer.office]\nurl = {drop.url()}\ntimeout = 3s\n"
                   "status-interval = 0\n", default="office")
        # Not asked yet: no ready sample (a 0 would fire TpadPrinterNotReady).
        st, metrics = self.printer_status("office")
        self.assertEqual(st["state"], "unknown")
        self.assertIn("# TYPE tpad_printer_ready gauge", metrics)
        self.assertNotIn('tpad_printer_ready{printer="office"}', metrics)
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate", {"devEUI": eui(41), "generateAppKey": True,
                                                "print": {"copies": 100}})
            reply = c.recv()
        self.assertEqual(reply.get("error"), "io.tpad.Station.PrintFailed", reply)
        reason = reply["parameters"]["reason"]
        self.assertIn("lost the connection to the printer during the job", reason)
        self.assertNotIn("refused", reason)
        st, metrics = self.printer_status("office")
        self.assertEqual((st["state"], st["ready"]), ("unreachable", False))
        self.assertIn('tpad_printer_ready{printer="office"} 0', metrics)
        # The audit row keeps the whole reason (it was cut at 50 characters).
        job = reply["parameters"]["job"]
        wait_for(lambda: f"print failed on office job {job}: {reason}" in self.audit(eui(41)),
                 10, "the audit row with the whole reason")

    def test_a_printer_restarted_while_it_prints_fails_the_job(self):
        """The IPP printer took the job and is killed before it prints it (a power cycle):
        the job is lost with it. It was reported printed (the follow-up's lost connection
        was taken for "cannot tell"); it is PrintFailed, saying the label may be missing,
        audited, and the reprint after the printer is back prints."""
        slow = os.path.join(self.tmp, "slow.sh")
        with open(slow, "w") as f:
            f.write("#!/bin/sh\nsleep 3\n")
        os.chmod(slow, 0o755)
        self.ipp = IppPrinter(self.tmp, command=slow)
        self.start(f"[printer.office]\nurl = {self.ipp.url()}\ntimeout = 6s\n"
                   "status-interval = 0\n", default="office")
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate",
                   {"devEUI": eui(43), "generateAppKey": True, "print": {}})
            wait_for(self.ipp.files, 10, "the job at the printer")
            time.sleep(0.3)
            self.ipp.restart()
            reply = c.recv()
        self.assertEqual(reply.get("error"), "io.tpad.Station.PrintFailed", reply)
        reason = reply["parameters"]["reason"]
        self.assertIn("its job 1", reason)
        self.assertIn("the label may not have come out", reason)
        self.assertEqual(reply["parameters"]["device"]["state"], "ISSUED")
        job = reply["parameters"]["job"]
        wait_for(lambda: f"print failed on office job {job}: {reason}" in self.audit(eui(43)),
                 10, "the failed print's audit row")
        with self.d.station_client() as c:
            r = c.call("io.tpad.Station.Lookup", {"devEUI": eui(43), "print": {}})
        self.assertEqual(r["print"]["state"], "printed")
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_job_numbers_go_on_across_restarts(self):
        """Job numbers start from the clock, not from 1: the audit rows of a job before a
        restart and one after it never share a number."""
        self.start(self.raw_section())
        first = self.activate(eui(42), generateAppKey=True, print={})["print"]["job"]
        self.d.stop()
        self.d.start()
        with self.d.station_client() as c:
            second = c.call("io.tpad.Station.Lookup",
                            {"devEUI": eui(42), "print": {}})["print"]["job"]
        self.assertGreater(second, first)
        audit = wait_for(lambda: (lambda a: a if len(a) >= 2 else None)(
            [x for x in self.audit(eui(42)) if x.startswith("printed on")]), 10, "2 rows")
        self.assertEqual(sorted(audit), sorted({f"printed on line1 job {first}",
                                                f"printed on line1 job {second}"}))

    def test_a_job_the_printer_aborts_is_a_print_failure(self):
        """An IPP printer that accepts the job and then aborts it (its print command fails:
        a jam): PrintFailed with the printer's reason, the device still handed out (it was
        reported printed and audited as printed)."""
        jam = os.path.join(self.tmp, "jam.sh")
        with open(jam, "w") as f:
            f.write("#!/bin/sh\necho 'ERROR: media-jam' >&2\nexit 1\n")
        os.chmod(jam, 0o755)
        self.ipp = IppPrinter(self.tmp, command=jam)
        self.start(self.raw_section() +
                   f"[printer.office]\nurl = {self.ipp.url()}\ntimeout = 5s\n")
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Activate", {"devEUI": eui(9), "generateAppKey": True,
                                                "print": {"printer": "office"}})
            reply = c.recv()
        self.assertEqual(reply.get("error"), "io.tpad.Station.PrintFailed", reply)
        self.assertIn("aborted job", reply["parameters"]["reason"])
        self.assertEqual(reply["parameters"]["device"]["state"], "ISSUED")
        # A batch of a state no device is in: said so (it was NotFound with devEUI "").
        with self.d.admin_client() as a:
            with self.assertRaises(VarlinkError) as e:
                a.call("io.tpad.Admin.Print", {"state": "PENDING", "printer": "office"})
        self.assertEqual(e.exception.error, "io.tpad.Admin.InvalidParameter")
        self.assertIn("no device in this state", e.exception.params["reason"])

    def test_ipp_printer(self):
        self.ipp = IppPrinter(self.tmp)
        self.start(self.raw_section() +
                   f"[printer.office]\nurl = {self.ipp.url()}\ntimeout = 5s\n", )
        r = self.activate(eui(5), generateAppKey=True, serial="SN-IPP-1",
                          print={"printer": "office"})
        dev = r["device"]
        self.assertEqual(r["print"]["state"], "printed")
        self.assertGreater(r["print"]["printerJob"], 0)
        files = wait_for(self.ipp.files, 10, "the spooled PDF")
        pdf = files[-1]
        with open(pdf, "rb") as f:
            self.assertEqual(f.read(5), b"%PDF-")
        subprocess.run(["pdftoppm", "-r", "300", "-png", pdf, os.path.join(self.tmp, "ipp")],
                       check=True)
        self.assertEqual(decode_png(os.path.join(self.tmp, "ipp-1.png")), dev["qrText"])
        text = subprocess.run(["pdftotext", pdf, "-"], capture_output=True, text=True,
                              check=True).stdout
        self.assertIn(eui(5), text)
        self.assertIn("SN-IPP-1", text)
        with self.d.admin_client() as a:
            st = [p for p in a.call("io.tpad.Admin.Status")["printers"]
                  if p["name"] == "office"][0]
        self.assertEqual((st["language"], st["ready"]), ("pdf", True))
        # Out of paper (printer-state-reasons media-empty-report): PrintFailed; then back.
        self.ipp.set_media(0)
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Lookup", {"devEUI": eui(5), "print": {"printer": "office"}})
            reply = c.recv()
        self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
        self.assertIn("media-empty", reply["parameters"]["reason"])
        with self.d.admin_client() as a:
            st = [p for p in a.call("io.tpad.Admin.Status")["printers"]
                  if p["name"] == "office"][0]
        self.assertFalse(st["ready"])
        self.assertIn("media-empty", st["reasons"])
        self.ipp.set_media(250)
        n = len(self.ipp.files())
        r = self.d.tpactl("--socket", self.d.admin, "print", eui(5), "--printer", "office",
                          check=0)
        self.assertIn("printed 1 label on office", r.stdout)
        self.assertEqual(len(self.ipp.files()), n + 1)
        # Printer gone: PrintFailed, the record still handed out.
        self.ipp.stop()
        self.ipp = None
        with self.d.station_client() as c:
            c.send("io.tpad.Station.Lookup", {"devEUI": eui(5), "print": {"printer": "office"}})
            reply = c.recv()
        self.assertEqual(reply["error"], "io.tpad.Station.PrintFailed")
        self.assertIn("cannot connect: Connection refused", reply["parameters"]["reason"])
        self.assertEqual(reply["parameters"]["device"]["ownerToken"], dev["ownerToken"])
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_check_config(self):
        def check(text):
            path = os.path.join(self.tmp, "c.conf")
            with open(path, "w") as f:
                f.write(text)
            return subprocess.run([tpadtest.TPAD, "--config", path, "--check-config"],
                                  capture_output=True, text=True)
        p = check("[label]\ncaption-2 = SN {serail}\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf:2:", p.stderr)
        self.assertIn("{serail}", p.stderr)
        p = check("[print]\ndefault = nowhere\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf:2:", p.stderr)
        self.assertIn("nowhere", p.stderr)
        p = check("[printer.a]\nurl = socket://127.0.0.1\nwidth = 20\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf:2: [printer.a]: label.caption-1", p.stderr)
        self.assertIn("label.caption-1", p.stderr)
        # A tall label: the code takes the whole width, and the message said the
        # captions needed 5.3 mm while "the label has 495.0 mm".
        p = check("[label]\nheight = 500\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("label.caption-2: the code (56.3 mm with its quiet zone) takes the "
                      "label's whole width", p.stderr)
        self.assertIn("set label.qr-size smaller or label.captions = below", p.stderr)
        p = check("[label]\ncaption-3 = a rather long line of free text\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("label.caption-3", p.stderr)
        # ZPL cannot go to an IPP printer (it took tpad down at the first job).
        p = check("[printer.a]\nurl = ipp://127.0.0.1/ipp/print\nlanguage = zpl\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf:3: printer.a.language = zpl needs a socket:// url", p.stderr)
        for url, why in (("socket://user@127.0.0.1:9100", "user name"),
                         ("ipp://[::1/ipp", "not closed")):
            p = check(f"[printer.a]\nurl = {url}\n")
            self.assertEqual(p.returncode, 1, url)
            self.assertIn("c.conf:2: printer.a.url", p.stderr)
            self.assertIn(why, p.stderr)
        # One station, two default printers: the first took its labels without a word.
        p = check("[printer.a]\nurl = socket://127.0.0.1\nstation-uids = root\n"
                  "[printer.b]\nurl = socket://127.0.0.2\nstation-uids = daemon root\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf:6: printer.b.station-uids: uid 0 is in printer.a.station-uids "
                      "too; a station has one default printer", p.stderr)
        p = check("[printer.a]\nurl = socket://127.0.0.1\nstation-groups = root\n"
                  "[printer.b]\nurl = socket://127.0.0.2\nstation-groups = root\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("printer.b.station-groups: gid 0 is in printer.a.station-groups", p.stderr)
        key = os.path.join(self.tmp, "store.key")
        tpadtest.write_secret(key, "00" * 32)
        p = check("[printer.a]\nurl = socket://127.0.0.1\n[printer.b]\n"
                  "url = ipps://127.0.0.1/ipp/print\n[print]\ndefault = b\n"
                  f"[store]\nkey-file = {key}\n[upstream]\nurl = http://127.0.0.1:9\n")
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    tpadtest.main()
