"""libtpad-client against the real tpad: threads with a connection each, every error path
with its code, name and message, a silent server's timeout, the C example station, and
the library loaded by ctypes as LabVIEW or TestStand would load it; its streams against
the real tpas."""

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import time

import tpadtest
from test_tpas import DEV, TpasCase
from tpadtest import TpadTestCase, wait_for

TKM = "31110123D345666E2DBD"


class CClient(TpadTestCase):
    def start(self, conf_extra="", printers=""):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 2\n" + conf_extra)
        with open(d.conf, "a") as f:
            f.write(printers)
        d.start()
        # 7: a printer not ready (out of paper on purpose); the cloud is ready all the same.
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode in (0, 7), 15,
                 "ready")
        return s, d

    def test_library(self):
        s, d = self.start()
        silent_path = os.path.join(self.tmp, "silent.sock")
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(silent_path)
        silent.listen(4)
        try:
            p = subprocess.run([os.environ["TEST_LIBTPAD_CLIENT"], d.station, d.admin,
                                silent_path], capture_output=True, text=True, timeout=120)
        finally:
            silent.close()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\d+ checks, 0 failed")
        # Exactly once at the cloud, whatever the threads did.
        c = s.counters()
        self.assertEqual(c["duplicate_imports"], 0)
        self.assertEqual(c["imports"], 8 * 25 + 1)

    def start_out_of_paper(self):
        """A tpad whose default printer is out of paper: each print gives PrintFailed."""
        from test_print import HS_PAPER_OUT, RawPrinter
        printer = RawPrinter()
        self.addCleanup(printer.close)
        printer.status = HS_PAPER_OUT
        return self.start("print.default = line1",
                          f"[printer.line1]\nurl = {printer.url()}\ntimeout = 2s\n")

    def test_print_failed(self):
        """PrintFailed through the library: parameters that parse, a message without secrets."""
        s, d = self.start_out_of_paper()
        p = subprocess.run([os.environ["TEST_LIBTPAD_CLIENT"], "--print-failed", d.station],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\d+ checks, 0 failed")

    def test_printed(self):
        """tpad_activate_print() and tpad_lookup_print() with a ready printer: each job
        reaches it, the second with two copies of the label (^PQ2)."""
        from test_print import RawPrinter
        printer = RawPrinter()
        self.addCleanup(printer.close)
        s, d = self.start("print.default = line1",
                          f"[printer.line1]\nurl = {printer.url()}\ntimeout = 2s\n")
        p = subprocess.run([os.environ["TEST_LIBTPAD_CLIENT"], "--printed", d.station],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\d+ checks, 0 failed")
        wait_for(lambda: len(printer.jobs) >= 2, 10, "two jobs at the printer")
        with printer.lock:
            jobs = list(printer.jobs)
        self.assertEqual(len(jobs), 2)
        self.assertEqual([j.count("^XA") for j in jobs], [1, 1])
        self.assertNotIn("^PQ", jobs[0])  # one copy: ZPL's default quantity
        self.assertIn("^PQ2", jobs[1])
        self.assertEqual(s.counters()["imports"], 1)

    def test_secrets_wiped(self):
        """Once a station program has cleared the PrintFailed error that carried a device
        (tpad_error_clear()) and the device a Lookup gave (tpad_device_clear()), and closed
        the connection, its memory holds no copy of the AppKey: the library wiped its read
        buffer, the texts of its calls and replies, and the JSON values it parsed."""
        from test_memory import key_forms, scan
        s, d = self.start_out_of_paper()
        p = subprocess.Popen([os.environ["TEST_LIBTPAD_CLIENT"], "--wiped", d.station],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            self.assertRegex(p.stdout.readline(), r"\d+ checks, 0 failed")
            with d.station_client() as c:
                key = c.call("io.tpad.Station.Lookup",
                             {"devEUI": "00C4000000000001"})["device"]["appKey"]
            self.assertEqual(scan(p.pid, key_forms("AppKey", key)), [])
        finally:
            p.stdin.close()
            p.stdout.close()
            self.assertEqual(p.wait(30), 0)

    def test_example_station(self):
        s, d = self.start()
        label = os.path.join(self.tmp, "dev.png")
        p = subprocess.run([os.environ["EXAMPLE_STATION_C"], "0123456789ABCDEF", TKM,
                            "--serial", "SN-7", "--label", label, "--socket", d.station],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ownerToken", p.stdout)
        qr = [l.split(None, 1)[1] for l in p.stdout.splitlines() if l.startswith("qrText")][0]
        if shutil.which("zbarimg"):
            z = subprocess.run(["zbarimg", "--raw", "-q", label], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(z.stdout.strip(), qr)
        # Same device, other record: refused, exit 1; no tpad: 3; usage: 2.
        p = subprocess.run([os.environ["EXAMPLE_STATION_C"], "0123456789ABCDEF",
                            "31110123D345666E0000", "--socket", d.station, "--label", label],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("io.tpad.Station.Conflict", p.stderr)
        p = subprocess.run([os.environ["EXAMPLE_STATION_C"], "0123456789ABCDEF", TKM,
                            "--socket", os.path.join(self.tmp, "none.sock")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 3)
        p = subprocess.run([os.environ["EXAMPLE_STATION_C"]], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)

    def test_long_template_text(self):
        """A manufacturer's template may make a long QR text: it arrives whole."""
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        template = "ACME-" + "0" * 420 + "{ownerToken}{ownerToken}{ownerToken}-{devEUI}-{ownerToken}"
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra=f"qr.template = {template}").start()
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15, "ready")
        p = d.tpactl("--socket", d.station, "--json", "activate", "--dev-eui",
                     "0123456789ABCDEF", "--tkm-info", TKM, check=0)
        import json
        dev = json.loads(p.stdout)["device"]
        self.assertTrue(dev["qrText"].startswith("ACME-000"))
        self.assertGreater(len(dev["qrText"]), 511)
        self.assertIn("-0123456789ABCDEF-" + dev["ownerToken"], dev["qrText"])

    def test_ctypes(self):
        """A tool that loads the shared library (ctypes here, LabVIEW's Call Library
        Function alike) calls it with plain structs."""
        if os.environ.get("TPAD_SANITIZE", "none") != "none":
            self.skipTest("the library is built with sanitizers: Python cannot load it")
        s, d = self.start()
        lib = ctypes.CDLL(os.environ["LIBTPAD_CLIENT"])
        lib.tpad_client_version.restype = ctypes.c_char_p
        self.assertEqual(lib.tpad_client_version(), b"0.2.0")

        class Error(ctypes.Structure):
            _fields_ = [("code", ctypes.c_int), ("name", ctypes.c_char * 128),
                        ("message", ctypes.c_char * 512), ("parameters", ctypes.c_char * 1024),
                        ("sys_errno", ctypes.c_int), ("retry_after", ctypes.c_int)]

        class Device(ctypes.Structure):
            _fields_ = [("dev_eui", ctypes.c_char * 17), ("join_eui", ctypes.c_char * 17),
                        ("profile_id", ctypes.c_char * 9), ("serial", ctypes.c_char * 65),
                        ("owner_token", ctypes.c_char * 129), ("app_key", ctypes.c_char * 33),
                        ("qr_text", ctypes.c_char * 1024), ("state", ctypes.c_char * 8),
                        ("source", ctypes.c_char * 8), ("qr_format", ctypes.c_char * 8),
                        ("qr_data", ctypes.c_void_p), ("qr_len", ctypes.c_size_t)]

        with d.station_client() as c:
            dev = c.call("io.tpad.Station.Activate",
                         {"devEUI": "0123456789ABCDEF", "tkmInfo": TKM})["device"]
        client = ctypes.c_void_p()
        err = Error()
        self.assertEqual(lib.tpad_client_open(d.station.encode(), 5000, ctypes.byref(client),
                                              ctypes.byref(err)), 0, err.message)
        out = Device()
        r = lib.tpad_lookup(client, b"0123456789ABCDEF", None, ctypes.byref(out),
                            ctypes.byref(err))
        self.assertEqual(r, 0, err.message)
        self.assertEqual(out.owner_token.decode(), dev["ownerToken"])
        self.assertEqual(out.source, b"stored")
        r = lib.tpad_lookup(client, b"FFFFFFFFFFFFFFFF", None, ctypes.byref(out),
                            ctypes.byref(err))
        self.assertEqual(r, -21)
        self.assertEqual(err.name, b"io.tpad.Station.NotFound")
        lib.tpad_device_clear(ctypes.byref(out))
        lib.tpad_client_close(client)


class CStream(TpasCase):
    def test_streams(self):
        """tpad_call_more() and tpad_more_next() on tpas's Uplinks: a stream read to its end,
        an error reply, a quiet stream's timeout, a follower waiting for ever, and a stream
        left by closing its connection (test-libtpad-client --stream)."""
        t = self.tpas().start()
        s = self.lrc(t)
        s.add_device(DEV, self.import_astk(t))
        for i in range(3):
            self.assertEqual(s.uplink(DEV, b"s%d" % i)[0], 200)
        p = subprocess.Popen([os.environ["TEST_LIBTPAD_CLIENT"], "--stream", t.apps],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        self.assertEqual(p.stdout.readline(), "waiting\n", p.poll() and p.stderr.read())
        time.sleep(1)  # longer than the connection's timeout: the follower waits on
        self.assertEqual(s.uplink(DEV, b"late")[0], 200)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertRegex(out, r"\d+ checks, 0 failed")


if __name__ == "__main__":
    tpadtest.main()
