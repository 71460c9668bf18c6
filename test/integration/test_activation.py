"""Integration tests of live activation: the real tpad against tpa-sim over TLS-PSK."""

import base64
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, wait_for

TKM = "31110123D345666E2DBD"


def crc16_modbus(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def check_tr005(testcase, text, device):
    """The label text is TR005 with a valid checksum and the device's fields."""
    body, _, crc = text.rpartition(":C")
    testcase.assertEqual(int(crc, 16), crc16_modbus(body.encode()), text)
    parts = body.split(":")
    testcase.assertEqual(parts[:5], ["LW", "D0", device["joinEUI"], device["devEUI"],
                                     device["profileId"]])
    testcase.assertIn("O" + device["ownerToken"], parts)


def eui(n):
    return f"70B3D5{n:010X}"


class Base(TpadTestCase):
    def start(self, sim_extra=(), conf_extra="", psk=None):
        psk = psk or secrets.token_hex(16)
        self.s = self.sim(psk).start() if not sim_extra else self.sim(psk, extra=sim_extra).start()
        self.d = self.daemon(upstream_url=self.s.url(), psk_hex=psk,
                             conf_extra=conf_extra).start()
        self.wait_upstream_ready()
        return self.d

    def wait_upstream_ready(self, d=None):
        d = d or self.d
        def ready():
            with d.admin_client() as a:
                up = a.call("io.tpad.Admin.Status")["upstream"]
            return all(s["state"] == "ready" for s in up["sessions"])
        wait_for(ready, 15, "warm upstream sessions")

    def activate(self, dev, **kw):
        params = {"devEUI": dev, **kw}
        with self.d.station_client() as c:
            return c.call("io.tpad.Station.Activate", params)

    def status(self, d=None):
        with (d or self.d).admin_client() as a:
            return a.call("io.tpad.Admin.Status")


class LiveModes(Base):
    def test_secure_element(self):
        self.start(conf_extra="device.join-eui = 70b3d57ed0000001\nqr.profile-id = aabb1122")
        r = self.activate("0123d345666e2dbd", tkmInfo=TKM.lower(), serial="SN-0001")
        dev = r["device"]
        self.assertEqual(dev["devEUI"], "0123D345666E2DBD")
        self.assertEqual(dev["joinEUI"], "70B3D57ED0000001")
        self.assertEqual(dev["profileId"], "AABB1122")
        self.assertEqual(dev["serial"], "SN-0001")
        self.assertEqual(dev["state"], "ISSUED")
        self.assertEqual(dev["source"], "live")
        self.assertNotIn("appKey", dev)
        self.assertRegex(dev["ownerToken"], r"^[0-9A-F]{32}$")
        check_tr005(self, dev["qrText"], dev)
        self.assertIn(":SSN-0001:", dev["qrText"])
        sim_dev = [x for x in self.s.devices() if x["deviceEUI"] == "0123D345666E2DBD"][0]
        self.assertEqual(sim_dev["ownerToken"].upper(), dev["ownerToken"])
        self.assertEqual(sim_dev["tkmInfo"].upper(), TKM)
        # One structured line per activation (stderr is not the journal here).
        self.assertRegex(self.d.log_text(), r"Activate DEVEUI=0123D345666E2DBD "
                         r"METHOD=io.tpad.Station.Activate OUTCOME=ok SOURCE=live STATION_UID=\d+ STATION_PID=\d+ LATENCY_MS=[0-9.]+")

    def test_without_secure_element(self):
        self.start()
        r = self.activate(eui(1), generateAppKey=True, joinEUI="1122334455667788",
                          profileId="0000000A")
        dev = r["device"]
        self.assertRegex(dev["appKey"], r"^[0-9A-F]{32}$")
        self.assertEqual(dev["joinEUI"], "1122334455667788")
        sim_dev = [x for x in self.s.devices() if x["deviceEUI"] == eui(1)][0]
        self.assertEqual(sim_dev["appKey"].upper(), dev["appKey"])
        key = "000102030405060708090a0b0c0d0e0f"
        r = self.activate(eui(2), appKey=key)
        self.assertEqual(r["device"]["appKey"], key.upper())
        # Two generated keys differ.
        r3 = self.activate(eui(3), generateAppKey=True)
        self.assertNotEqual(r3["device"]["appKey"], dev["appKey"])

    def test_label_formats(self):
        self.start()
        r = self.activate(eui(10), tkmInfo=TKM, qr={"format": "png", "scale": 3, "ecLevel": "Q"})
        self.assertEqual(r["qr"]["format"], "png")
        png = base64.b64decode(r["qr"]["data"])
        self.assertTrue(png.startswith(b"\x89PNG"))
        path = os.path.join(self.tmp, "l.png")
        with open(path, "wb") as f:
            f.write(png)
        out = subprocess.run(["zbarimg", "--raw", "-q", path], capture_output=True, text=True)
        self.assertEqual(out.stdout.strip(), r["device"]["qrText"])
        r = self.activate(eui(10), qr={"format": "svg"})
        svg = base64.b64decode(r["qr"]["data"]).decode()
        self.assertIn("<svg", svg)
        self.assertIn("viewBox", svg)
        r = self.activate(eui(10), qr={"format": "zpl"})
        zpl = base64.b64decode(r["qr"]["data"]).decode()
        self.assertTrue(zpl.startswith("^XA") and zpl.rstrip().endswith("^XZ"))
        self.assertIn(r["device"]["qrText"], zpl)
        r = self.activate(eui(10), qr={"format": "text"})
        self.assertIn("\u2588", base64.b64decode(r["qr"]["data"]).decode())
        r = self.activate(eui(10), qr={"format": "none"})
        self.assertNotIn("qr", r)
        # Lookup renders labels from the store.
        with self.d.station_client() as c:
            r = c.call("io.tpad.Station.Lookup", {"devEUI": eui(10).lower(), "qr": {}})
        self.assertEqual(r["device"]["source"], "stored")
        self.assertEqual(r["qr"]["format"], "png")
        # Labels drawn from the stored QR code (default options) and fresh (level H)
        # decode to the same text.
        for opts in ({}, {"ecLevel": "H", "scale": 2}):
            with self.d.station_client() as c:
                r = c.call("io.tpad.Station.Lookup", {"devEUI": eui(10), "qr": opts})
            with open(path, "wb") as f:
                f.write(base64.b64decode(r["qr"]["data"]))
            out = subprocess.run(["zbarimg", "--raw", "-q", path], capture_output=True,
                                 text=True)
            self.assertEqual(out.stdout.strip(), r["device"]["qrText"], opts)

    def test_tpactl_activate_and_lookup(self):
        d = self.start()
        out = os.path.join(self.tmp, "label.png")
        p = d.tpactl("--socket", d.station, "activate", "--dev-eui", eui(20), "--tkm-info",
                     TKM, "-o", out, check=0)
        self.assertIn("ownerToken", p.stdout)
        self.assertIn("ISSUED (live)", p.stdout)
        dec = subprocess.run(["zbarimg", "--raw", "-q", out], capture_output=True, text=True)
        self.assertTrue(dec.stdout.startswith("LW:D0:"))
        p = d.tpactl("lookup", "--dev-eui", eui(20), "--json", "--socket", d.station, check=0)
        self.assertEqual(json.loads(p.stdout)["device"]["source"], "stored")
        p = d.tpactl("--socket", d.station, "activate", "--dev-eui", eui(21),
                     "--generate-app-key", "--format", "text", check=0)
        self.assertIn("appKey", p.stdout)
        self.assertIn("\u2588", p.stdout)
        d.tpactl("--socket", d.station, "lookup", "--dev-eui", eui(99), check=1)
        d.tpactl("--socket", d.station, "activate", "--dev-eui", eui(22), "--tkm-info", TKM,
                 "--generate-app-key", check=2)


class Rules(Base):
    def test_a_refusal_quoting_the_app_key_is_masked(self):
        """A cloud whose refusal quotes the request's AppKey: the reason the station gets,
        tpad's log and the store's last_error show "***" in its place (and the DevEUI)."""
        self.start()
        self.s.faults(reject_echo=True)
        key = secrets.token_hex(16)
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.activate(eui(0x60), appKey=key)
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamRejected")
        reason = json.dumps(e.exception.params)
        self.assertIn(f"appKey *** refused for device {eui(0x60)}", reason)
        stored = self.store_sql(self.d, "SELECT last_error FROM devices")
        self.assertIn("appKey *** refused", stored)
        for where, text in (("the reason", reason), ("the log", self.d.log_text_all()),
                            ("the store", stored)):
            self.assertNotIn(key, text.lower(), where)

    def test_a_long_refusal_is_cut_between_characters(self):
        """The cloud's message is cut to fit what tpad gives (255 bytes) and keeps (100
        bytes of it in the row's last error); a cut inside a character would make text that
        is not UTF-8, which the reply's JSON and PostgreSQL's row both refuse (the row's
        transaction rolled back)."""
        self.start()
        message = "refus\u00e9 " + "\u00e9" * 200
        self.s.faults(reject_message=message[:200])
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.activate(eui(0x61), tkmInfo=TKM)
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamRejected")
        # 255 bytes fall inside an é: the cut leaves all of that one out.
        self.assertEqual(e.exception.params["message"], "refus\u00e9 " + "\u00e9" * 123)
        with self.d.admin_client() as a:
            dev = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui(0x61)})["device"]
        self.assertEqual(dev["state"], "FAILED")
        self.assertIn("TPA answered HTTP 400: refus\u00e9 " + "\u00e9" * 46, dev["lastError"])
        self.assertNotIn("\u00e9" * 47, dev["lastError"])
        self.assertNotIn("\ufffd", dev["lastError"])

    def test_idempotency_and_conflicts(self):
        self.start()
        first = self.activate(eui(1), tkmInfo=TKM)["device"]
        again = self.activate(eui(1).lower(), tkmInfo=TKM.lower())["device"]
        self.assertEqual(again["source"], "stored")
        self.assertEqual(again["ownerToken"], first["ownerToken"])
        # Without key material: answered from the store (offline mode).
        self.assertEqual(self.activate(eui(1))["device"]["ownerToken"], first["ownerToken"])
        for kw in ({"tkmInfo": "31110123D345666E0000"},
                   {"tkmInfo": TKM, "joinEUI": "0000000000000009"},
                   {"generateAppKey": True},
                   {"tkmInfo": TKM, "serial": "OTHER"}):
            with self.assertRaises(VarlinkError) as e:
                self.activate(eui(1), **kw)
            self.assertEqual(e.exception.error, "io.tpad.Station.Conflict", kw)
            self.assertEqual(e.exception.params["devEUI"], eui(1))
        key = "00112233445566778899AABBCCDDEEFF"
        self.activate(eui(2), appKey=key)
        self.assertEqual(self.activate(eui(2), appKey=key.lower())["device"]["source"], "stored")
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(2), appKey="FF" * 16)
        self.assertEqual(e.exception.error, "io.tpad.Station.Conflict")
        c = self.s.counters()
        self.assertEqual(c["imports"], 2)
        self.assertEqual(c["duplicate_imports"], 0)

    def test_parameter_rules(self):
        self.start()
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), tkmInfo=TKM, appKey="00" * 16)
        self.assertEqual(e.exception.error, "io.tpad.Station.InvalidParameter")
        self.assertEqual(e.exception.params["parameter"], "appKey")
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), appKey="00" * 16, generateAppKey=True)
        self.assertEqual(e.exception.params["parameter"], "generateAppKey")
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1))
        self.assertEqual(e.exception.error, "io.tpad.Station.NotFound")
        with self.assertRaises(VarlinkError) as e:
            with self.d.station_client() as c:
                c.call("io.tpad.Station.Lookup", {"devEUI": eui(1)})
        self.assertEqual(e.exception.error, "io.tpad.Station.NotFound")
        self.assertEqual(self.s.counters()["imports"], 0)

    def test_concurrent_same_device(self):
        self.start(sim_extra=["--latency-ms", "100"])
        results = []

        def go():
            try:
                results.append(self.activate(eui(5), tkmInfo=TKM)["device"])
            except Exception as e:  # noqa: BLE001 - recorded and asserted below
                results.append(e)
        ts = [threading.Thread(target=go) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len({r["ownerToken"] for r in results}), 1, results)
        self.assertEqual(sum(r["source"] == "live" for r in results), 1)
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_allowed_uids(self):
        self.start(conf_extra="station.allowed-uids = 4242")
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), tkmInfo=TKM)
        self.assertEqual(e.exception.error, "io.tpad.Station.PermissionDenied")
        self.assertEqual(self.s.counters()["imports"], 0)
        self.assertIn("not in station.allowed-uids", self.d.log_text())
        # The refusal is in the audit trail (written with the next commit, not before
        # the reply).
        def denied_audited():
            rows = self.store_sql(self.d, "SELECT dev_eui, method, outcome FROM audit")
            return f"{eui(1)}|io.tpad.Station.Activate|denied" in rows
        wait_for(denied_audited, 5, "the refusal in the audit trail")
        # GetInfo stays open to everyone who can reach the socket.
        with self.d.station_client() as c:
            c.call("org.varlink.service.GetInfo")


class SerialFits(Base):
    def test_a_serial_too_long_for_the_label_is_refused_before_anything_is_issued(self):
        """A serial the protocol accepts (up to 64 characters) but the label's caption
        cannot hold: refused at the call, nothing imported (the device was issued and its
        label then failed silently: no qr in the reply, left out of Export)."""
        self.start()
        long_serial = "SN" + "0" * 38
        for method, params, name in [
                ("io.tpad.Station.Activate", {"devEUI": eui(60), "tkmInfo": TKM,
                                              "serial": long_serial}, "serial"),
                ("io.tpad.Admin.Import", {"rows": [{"line": 2, "devEUI": eui(61),
                                                    "tkmInfo": TKM, "serial": long_serial}],
                                          "final": True}, "rows[0].serial")]:
            with self.subTest(method=method):
                sock = self.d.station_client() if "Station" in method else self.d.admin_client()
                with sock as c:
                    with self.assertRaises(VarlinkError) as e:
                        (c.call_more if "Import" in method else c.call)(method, params)
                self.assertTrue(e.exception.error.endswith(".InvalidParameter"), e.exception)
                self.assertEqual(e.exception.params["parameter"], name)
                self.assertIn("too long for the label", e.exception.params["reason"])
        self.assertEqual(self.s.counters()["imports"], 0)
        dev = self.activate(eui(62), tkmInfo=TKM, serial="SN-12", qr={"format": "png"})
        self.assertEqual(dev["device"]["serial"], "SN-12")
        self.assertIn("qr", dev)


class RetireWithoutDelete(Base):
    def test_a_404_to_the_delete_is_checked_by_query(self):
        """A cloud that does not delete by the import path answers the DELETE 404 (tpa-sim
        in its default mode serves no DELETE): Retire asks the read-only query, finds the
        device still there and refuses, the row stays ISSUED (it was marked RETIRED, "the
        cloud did not hold it", with the cloud still holding it)."""
        self.start()
        dev = self.activate(eui(40), tkmInfo=TKM)["device"]
        with self.d.admin_client() as a:
            with self.assertRaises(VarlinkError) as e:
                a.call("io.tpad.Admin.Retire", {"devEUI": eui(40), "reason": "scrapped"})
            self.assertEqual(e.exception.error, "io.tpad.Admin.Rejected")
            self.assertEqual(e.exception.params["httpStatus"], 404)
            self.assertIn("still holds the device", e.exception.params["message"])
            got = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui(40)})["device"]
        self.assertEqual((got["state"], got["ownerToken"]), ("ISSUED", dev["ownerToken"]))
        self.assertEqual([x["deviceEUI"] for x in self.s.devices()], [eui(40)])
        # The refusal is in the log too, not only in the admin's answer.
        self.assertIn(f"{eui(40)} not retired: the cloud answered 404 to the delete but still "
                      "holds the device", self.d.log_text())
        self.assertIn("(HTTP 404); it stays ISSUED", self.d.log_text())


class Faults(Base):
    """Each tpa-sim fault during activation: clear outcomes, and never a duplicate import."""

    def run_devices(self, first, n, threads=8):
        """Activate n devices concurrently; returns {eui: device or error name}."""
        out = {}
        lock = threading.Lock()
        euis = [eui(first + i) for i in range(n)]

        def worker(part):
            with self.d.station_client(timeout=60) as c:
                for e in part:
                    try:
                        r = c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})
                        v = r["device"]
                    except VarlinkError as err:
                        v = err.error.rsplit(".", 1)[1]
                    with lock:
                        out[e] = v
        ts = [threading.Thread(target=worker, args=(euis[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def settle_and_check(self, out):
        """Faults off, ask again for every device, then check the invariants."""
        self.s.faults(rate_5xx=0, rate_429=0, drop_before_answer=0, drop_before_import=0,
                      reset_after=0, malformed=0, slow=False, refuse=False, latency_ms=0)
        again = self.run_devices_list(list(out))
        # A device whose import may still land stays unknown until upstream.settle-after
        # (10 s here) has passed since its last attempt; then it settles, never twice.
        # Answers lost in a row open the breaker for its cool-down (a reconnect does not
        # close it): UpstreamUnavailable, which a station retries too.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            unknown = [e for e, v in again.items() if v in (
                "io.tpad.Station.OutcomeUnknown", "io.tpad.Station.UpstreamUnavailable")]
            if not unknown:
                break
            time.sleep(1)
            again.update(self.run_devices_list(unknown))
        sim = {x["deviceEUI"]: x["ownerToken"].upper() for x in self.s.devices()}
        for e, v in out.items():
            self.assertIsInstance(again[e], dict, (e, again[e]))
            if isinstance(v, dict):
                # A token a station received is the cloud's token, and stays so.
                self.assertEqual(v["ownerToken"], sim[e])
                self.assertEqual(again[e]["ownerToken"], v["ownerToken"])
            self.assertEqual(again[e]["ownerToken"], sim[e])
        c = self.s.counters()
        self.assertEqual(c["duplicate_imports"], 0, c)
        self.assertEqual(c["imports"], len(out))
        st = self.status()["store"]["rows"]
        self.assertEqual(st["PENDING"], 0)
        self.assertEqual(st["ISSUED"], len(out))

    def run_devices_list(self, euis):
        out = {}
        with self.d.station_client(timeout=60) as c:
            for e in euis:
                try:
                    out[e] = c.call("io.tpad.Station.Activate", {"devEUI": e})["device"]
                except VarlinkError as err:
                    out[e] = err.error
        return out

    def test_5xx(self):
        self.start()
        self.s.faults(rate_5xx=1.0)
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), tkmInfo=TKM)
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
        self.s.faults(rate_5xx=0.3)
        self.settle_and_check(self.run_devices(100, 40))

    def test_429_retry_after(self):
        """The station is told the cloud's Retry-After, and tpad keeps to it too: calls
        until then are answered at once without reaching the cloud (every one was sent)."""
        self.start()
        self.s.faults(rate_429=1.0, retry_after=3)
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), tkmInfo=TKM)
        t0 = time.monotonic()
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
        self.assertEqual(e.exception.params.get("retryAfter"), 3)
        self.s.faults(rate_429=0)
        r0 = self.s.counters()["requests"]
        for i in range(5):
            with self.assertRaises(VarlinkError) as e:
                self.activate(eui(2 + i), tkmInfo=TKM)
            self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
            self.assertIn("the cloud asked to wait (HTTP 429", e.exception.params["reason"])
            self.assertTrue(1 <= e.exception.params["retryAfter"] <= 3)
        self.assertEqual(self.s.counters()["requests"], r0)
        self.assertEqual(self.d.log_text_all().count("Retry-After 3 s"), 1)
        # Status, tpactl status and STATUS= say so (they said "ok").
        up = self.status()["upstream"]
        self.assertEqual(up["state"], "down")
        self.assertTrue(1 <= up["retryAfter"] <= 3, up)
        p = self.d.tpactl("--socket", self.d.admin, "status")
        self.assertEqual(p.returncode, 4, p.stdout)
        self.assertIn("THE CLOUD ASKED TO WAIT", p.stdout)
        self.d.wait_notify("the cloud asked to wait (HTTP 429)", 5)
        time.sleep(max(0.0, 3.1 - (time.monotonic() - t0)))
        self.assertEqual(self.activate(eui(1), tkmInfo=TKM)["device"]["source"], "live")
        self.assertEqual(self.activate(eui(2), tkmInfo=TKM)["device"]["source"], "live")

    def test_drop_after_import_then_settle(self):
        self.start()
        # Every answer is lost (the query's too): the outcome is unknown, the row PENDING.
        self.s.faults(drop_before_answer=1.0)
        with self.assertRaises(VarlinkError) as e:
            self.activate(eui(1), tkmInfo=TKM)
        self.assertEqual(e.exception.error, "io.tpad.Station.OutcomeUnknown")
        self.assertEqual(self.status()["store"]["rows"]["PENDING"], 1)
        self.assertEqual(self.s.counters()["imports"], 1)
        # Asked again once the cloud answers: the query adopts its token, no second import.
        self.s.faults(drop_before_answer=0)
        dev = self.activate(eui(1), tkmInfo=TKM)["device"]
        self.assertEqual(dev["ownerToken"], self.s.devices()[0]["ownerToken"].upper())
        self.assertEqual(self.s.counters()["duplicate_imports"], 0)
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_drops_mixed(self):
        self.start()
        self.s.faults(drop_before_answer=0.3, drop_before_import=0.2)
        self.settle_and_check(self.run_devices(200, 60))

    def test_resets_malformed_slow(self):
        self.start()
        self.s.faults(reset_after=1)
        out = self.run_devices(300, 20)
        # A request racing a silent close may end unknown; nothing else may go wrong.
        self.assertEqual({v for v in out.values() if not isinstance(v, dict)} - {"OutcomeUnknown"},
                         set(), out)
        self.s.faults(reset_after=0, malformed=0.3)
        out.update(self.run_devices(400, 30))
        self.s.faults(malformed=0, slow=True)
        out.update(self.run_devices(500, 5, threads=5))
        self.settle_and_check(out)

    def test_refused_then_recovers(self):
        self.start()
        # Warm sessions are closed after one more request and new connections refused.
        self.s.faults(refuse=True, reset_after=1)
        t0 = time.monotonic()
        outcomes, reasons = [], []
        for i in range(15):
            try:
                self.activate(eui(600 + i), tkmInfo=TKM)
                outcomes.append("ok")
            except VarlinkError as e:
                outcomes.append(e.error)
                reasons.append(e.params["reason"])
        self.assertLessEqual(outcomes.count("ok"), 4, outcomes)
        self.assertEqual(set(outcomes) - {"ok"}, {"io.tpad.Station.UpstreamUnavailable"})
        # The open breaker's reason quotes the sessions' last error whole, its hint too,
        # to the station and in the log.
        opened = [r for r in reasons if "circuit breaker open after" in r]
        self.assertTrue(opened, reasons)
        for r in opened:
            self.assertRegex(r, r"\(is the cloud reachable\? .* nothing behind it\)$")
        self.assertRegex(self.d.log_text(), r"activation of \w+: unavailable: upstream "
                         r"circuit breaker open after .* nothing behind it\)\n")
        self.assertLess(time.monotonic() - t0, 30)
        up = self.status()["upstream"]
        self.assertIn(up["state"], ("degraded", "down"))
        self.s.faults(refuse=False, reset_after=0)
        self.wait_upstream_ready()
        for i in range(15):
            dev = self.activate(eui(600 + i), tkmInfo=TKM)["device"]
            self.assertEqual(dev["state"], "ISSUED")
        self.assertEqual(self.s.counters()["duplicate_imports"], 0)
        self.assertEqual(self.s.counters()["imports"], 15)
        self.assertEqual(self.status()["upstream"]["breaker"], "closed")

    def test_409_from_elsewhere_is_foreign_until_adopted(self):
        """Defect 4: a 409 no attempt of ours explains is never answered ok."""
        d = self.start()
        first = self.activate(eui(1), tkmInfo=TKM)["device"]["ownerToken"]
        # A second line PC with its own store: the cloud says 409 to its first import.
        d2 = self.daemon(upstream_url=self.s.url(), psk_hex=self.s.psk_hex).start()
        self.wait_upstream_ready(d2)
        with d2.station_client() as c:
            with self.assertRaises(VarlinkError) as cm:
                c.call("io.tpad.Station.Activate", {"devEUI": eui(1), "tkmInfo": TKM})
            self.assertEqual(cm.exception.error, "io.tpad.Station.Conflict")
            self.assertIn("tpactl adopt", cm.exception.params["reason"])
            # Lookup says the same; nothing is handed out.
            with self.assertRaises(VarlinkError) as cm:
                c.call("io.tpad.Station.Lookup", {"devEUI": eui(1)})
            self.assertEqual(cm.exception.error, "io.tpad.Station.Conflict")
        with d2.admin_client() as a:
            info = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui(1)})
            self.assertEqual(info["device"]["state"], "FOREIGN")
            # What the Conflict tells the admin to adopt, the list finds by its state.
            listed = a.call("io.tpad.Admin.ListDevices", {"state": "foreign"})["devices"]
            self.assertEqual([x["devEUI"] for x in listed], [eui(1)])
            self.assertEqual([x["outcome"] for x in info["attempts"]], ["conflict"])
        # The same with an AppKey device seeded on the cloud by "the console": the station's
        # own (or a generated) key would never join, so it must not be answered ok.
        seeded = self.s.seed(eui(2), appKey="11" * 16)
        with d2.station_client() as c:
            with self.assertRaises(VarlinkError) as cm:
                c.call("io.tpad.Station.Activate", {"devEUI": eui(2), "generateAppKey": True})
            self.assertEqual(cm.exception.error, "io.tpad.Station.Conflict")
        # The admin who knows better adopts: the cloud's token, audited as "adopted".
        p = subprocess.run([tpadtest.TPACTL, "--socket", d2.admin, "adopt", eui(1)],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(first, p.stdout)
        with d2.station_client() as c:
            dev = c.call("io.tpad.Station.Activate", {"devEUI": eui(1), "tkmInfo": TKM})["device"]
        self.assertEqual(dev["ownerToken"], first)
        def audited():
            # Audit rows go with the next commit, not before the reply.
            with d2.admin_client() as a:
                info = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui(1)})
            return "adopted" in [x["outcome"] for x in info["audit"]]
        wait_for(audited, 5, "the adoption in the audit trail")
        with d2.admin_client() as a:
            self.assertEqual(a.call("io.tpad.Admin.Status")["activations"]["foreign"], 2)
        # Adopting a device that is not FOREIGN is refused.
        p = subprocess.run([tpadtest.TPACTL, "--socket", d2.admin, "adopt", eui(1)],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        c = self.s.counters()
        self.assertEqual(c["imports"], 1)
        self.assertEqual(c["duplicate_imports"], 2)  # the two 409s, never a second landing
        self.assertNotEqual(seeded["ownerToken"].upper(), first)
        d.stop()


class Durability(Base):
    def test_restart_settles_pending(self):
        # The breaker stays out of the way: every request below must reach tpa-sim.
        d = self.start(conf_extra="upstream.breaker-threshold = 100000")
        self.s.faults(drop_before_answer=1.0)
        for i in range(3):
            self.wait_upstream_ready()
            with self.assertRaises(VarlinkError):
                self.activate(eui(i), tkmInfo=TKM)
        # One was read by the cloud but never imported.
        self.s.faults(drop_before_answer=0, drop_before_import=1.0)
        self.wait_upstream_ready()
        with self.assertRaises(VarlinkError):
            self.activate(eui(9), tkmInfo=TKM)
        self.assertEqual(self.status()["store"]["rows"]["PENDING"], 4)
        self.assertEqual(d.stop(), 0)
        self.s.faults(drop_before_import=0)
        d.start()
        wait_for(lambda: self.status()["store"]["rows"]["PENDING"] == 0, 20, "settled rows")
        sim = {x["deviceEUI"]: x["ownerToken"].upper() for x in self.s.devices()}
        self.assertEqual(len(sim), 4)
        for e in [eui(0), eui(1), eui(2), eui(9)]:
            with d.station_client() as c:
                dev = c.call("io.tpad.Station.Lookup", {"devEUI": e})["device"]
            self.assertEqual(dev["ownerToken"], sim[e])
        c = self.s.counters()
        self.assertEqual(c["duplicate_imports"], 0)
        self.assertEqual(c["imports"], 4)
        self.assertIn("PENDING devices", d.log_text_all())

    def test_kill_9_during_concurrent_activations(self):
        """SIGKILL at random moments during 200 activations from 20 clients, twice."""
        d = self.start(sim_extra=["--latency-ms", "5", "--jitter-ms", "10"])
        rng = random.Random(int(os.environ.get("CRASH_SEED", "4242")))
        received = {}
        lock = threading.Lock()
        base = 1000
        for round_ in range(2):
            euis = [eui(base + round_ * 1000 + i) for i in range(200)]
            stop = threading.Event()

            def client(part):
                try:
                    with d.station_client(timeout=30) as c:
                        for e in part:
                            if stop.is_set():
                                return
                            key = {"tkmInfo": TKM} if int(e, 16) % 2 else {"generateAppKey": True}
                            try:
                                r = c.call("io.tpad.Station.Activate", {"devEUI": e, **key})
                            except VarlinkError:
                                continue
                            with lock:
                                received[e] = r["device"]
                except (OSError, EOFError):
                    return  # tpad was killed under us
            ts = [threading.Thread(target=client, args=(euis[i::20],)) for i in range(20)]
            for t in ts:
                t.start()
            time.sleep(rng.uniform(0.05, 0.4))
            d.kill()
            stop.set()
            for t in ts:
                t.join()
            d.start()
            self.wait_upstream_ready()
            wait_for(lambda: self.status()["store"]["rows"]["PENDING"] == 0, 30,
                     "PENDING rows settled after the crash")
        self.assertGreater(len(received), 0)
        sim = {x["deviceEUI"]: x for x in self.s.devices()}
        with d.station_client() as c:
            for e, dev in received.items():
                stored = c.call("io.tpad.Station.Lookup", {"devEUI": e})["device"]
                self.assertEqual(stored["ownerToken"], dev["ownerToken"], e)
                self.assertEqual(sim[e]["ownerToken"].upper(), dev["ownerToken"], e)
                self.assertEqual(stored.get("appKey"), dev.get("appKey"), e)
            # Every device the cloud has is ISSUED in the store with the cloud's token.
            for e, x in sim.items():
                stored = c.call("io.tpad.Station.Lookup", {"devEUI": e})["device"]
                self.assertEqual(stored["ownerToken"], x["ownerToken"].upper())
        self.assertEqual(self.s.counters()["duplicate_imports"], 0)


class Shutdown(Base):
    def test_sigterm_finishes_activation_in_flight(self):
        d = self.start(sim_extra=["--latency-ms", "800"])
        result = {}

        def go():
            result["dev"] = self.activate(eui(1), tkmInfo=TKM)["device"]
        t = threading.Thread(target=go)
        t.start()
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        t.join(10)
        self.assertEqual(result["dev"]["state"], "ISSUED")
        d.wait_notify("STOPPING=1", 5)
        self.assertEqual(d.stop(), 0)

    def test_a_call_sent_while_stopping_is_answered_busy(self):
        """A call tpad reads after SIGTERM is not carried out: it is answered Busy in call
        order (not reset with the connection), and a oneway call is dropped."""
        d = self.start(sim_extra=["--latency-ms", "1500"])
        a = d.station_client()
        b = d.station_client()
        a.send("io.tpad.Station.Activate", {"devEUI": eui(1), "tkmInfo": TKM})
        wait_for(lambda: self.s.counters()["imports"] >= 1, 10, "the import reached the cloud")
        d.proc.send_signal(signal.SIGTERM)
        d.wait_notify("STOPPING=1", 5)
        # Behind the call in flight on its connection, and on a connection of its own.
        a.send("io.tpad.Station.Activate", {"devEUI": eui(2), "tkmInfo": TKM})
        b.send("io.tpad.Station.Activate", {"devEUI": eui(3), "tkmInfo": TKM}, oneway=True)
        b.send("io.tpad.Station.Lookup", {"devEUI": eui(1)})
        b.send("org.varlink.service.GetInfo")
        self.assertEqual([b.recv().get("error") for _ in range(2)],
                         ["io.tpad.Station.Busy"] * 2)
        first = a.recv()
        self.assertEqual(first["parameters"]["device"]["state"], "ISSUED", first)
        self.assertEqual(a.recv().get("error"), "io.tpad.Station.Busy")
        a.close()
        b.close()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(sorted(x["deviceEUI"].upper() for x in self.s.devices()), [eui(1)])
        log = d.log_text()
        self.assertIn("io.tpad.Station.Activate answered io.tpad.Station.Busy: tpad is stopping",
                      log)
        self.assertIn("org.varlink.service.GetInfo answered io.tpad.Station.Busy", log)

    def test_key_files_must_not_be_world_readable(self):
        s = self.sim(secrets.token_hex(16)).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=s.psk_hex)
        os.chmod(d.key_file, 0o644)
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(p.returncode, 1)
        # The message names the file and says how to fix it; --check-config finds it too.
        fix = f"{d.key_file} is readable by other users: run chmod o-rwx {d.key_file}"
        self.assertIn(fix, p.stderr)
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(fix, p.stderr)
        os.chmod(d.key_file, 0o600)
        os.chmod(d.psk_file, 0o604)
        for args in ((), ("--check-config",)):
            p = subprocess.run([tpadtest.TPAD, "--config", d.conf, *args], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"run chmod o-rwx {d.psk_file}", p.stderr)
            self.assertNotIn(s.psk_hex, p.stderr)
        # The fix keeps a group's read: a key root owns and the daemon's group reads
        # (root:tpad 0640, as systemd's tmpfiles make it) is no key others can read.
        for mode in (0o600, 0o640):
            os.chmod(d.psk_file, mode)
            os.chmod(d.key_file, mode)
            p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 0, p.stderr)


class StoreFailure(TpadTestCase):
    def test_disk_full(self):
        """A full disk gives StoreFailed, loses nothing, and heals (run in its own mount ns)."""
        if os.getuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private tmpfs")
        inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "storefail_inner.py")
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "python3", inner,
                            self.tmp], capture_output=True, text=True, timeout=120)
        if p.returncode == 77:
            self.skipTest(p.stdout.strip())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    tpadtest.main()
