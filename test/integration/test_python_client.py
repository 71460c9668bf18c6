"""Integration tests of the Python station client (client/python) against tpad and tpa-sim."""

import errno
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import tpadtest
from test_cloud import DxBase
from tpadtest import TpadTestCase, wait_for

sys.path.insert(0, os.path.join(tpadtest.SRC_ROOT, "client", "python"))
import tpad_client  # noqa: E402
from tpad_client import Client  # noqa: E402

EXAMPLE = os.path.join(tpadtest.SRC_ROOT, "client", "python", "example_station.py")
TKM = "31110123D345666E2DBD"
DEV = "0123D345666E2DBD"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def crc16_modbus(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class FakeServer:
    """A one-connection Unix socket server on a temporary path that answers with canned bytes.

    replies maps a method name to a list of raw messages (bytes, NUL added) sent back for
    each call of that method; a method missing from it gets no answer at all.
    """

    def __init__(self, path, replies):
        self.path = path
        self.replies = replies
        self.calls = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\0" in buf:
                    msg, buf = buf.split(b"\0", 1)
                    call = json.loads(msg)
                    self.calls.append(call)
                    for out in self.replies.get(call["method"], []):
                        conn.sendall(out + b"\0")

    def close(self):
        self.sock.close()
        self.thread.join(10)


def reply(params=None, continues=False, error=None):
    msg = {"parameters": params or {}}
    if continues:
        msg["continues"] = True
    if error:
        msg["error"] = error
    return json.dumps(msg).encode()


class Basics(TpadTestCase):
    """The client against a tpad with no reachable cloud."""

    def setUp(self):
        super().setUp()
        self.d = self.daemon().start()

    def test_get_info_and_description(self):
        with Client(self.d.station, timeout=10) as c:
            info = c.get_info()
            self.assertEqual(info["product"], "tpad")
            self.assertEqual(info["interfaces"], ["org.varlink.service", "io.tpad.Station"])
            desc = c.get_interface_description()
            self.assertIn("interface io.tpad.Station", desc)
            self.assertIn("method Lookup(", desc)
            # A short name is completed with the station interface.
            with self.assertRaises(tpad_client.MethodNotFound) as e:
                c.call("NoSuchMethod")
            self.assertEqual(e.exception.error, "org.varlink.service.MethodNotFound")
            self.assertEqual(e.exception.parameters["method"], "io.tpad.Station.NoSuchMethod")
        self.assertTrue(c.closed)

    def test_invalid_parameter_names_the_parameter(self):
        with Client(self.d.station, timeout=10) as c:
            with self.assertRaises(tpad_client.InvalidParameter) as e:
                c.lookup("0123")
            err = e.exception
            self.assertIsInstance(err, tpad_client.TpadError)
            self.assertEqual(err.error, "io.tpad.Station.InvalidParameter")
            self.assertEqual(err.parameter, "devEUI")
            self.assertTrue(err.reason)
            self.assertEqual(err.method, "io.tpad.Station.Lookup")
            self.assertIn("devEUI", str(err))
            with self.assertRaises(tpad_client.InvalidParameter) as e:
                c.activate(DEV, tkm_info=TKM, qr_scale=0)
            self.assertEqual(e.exception.parameter, "qr.scale")
            with self.assertRaises(tpad_client.InvalidParameter) as e:
                c.activate(DEV, tkm_info="XYZ")
            self.assertEqual(e.exception.parameter, "tkmInfo")
            # The connection is still good after error replies.
            self.assertEqual(c.get_info()["product"], "tpad")

    def test_lookup_unknown_device_is_not_found(self):
        with Client(self.d.station, timeout=10) as c:
            try:
                c.lookup(DEV)
            except tpad_client.MethodNotImplemented:
                self.skipTest("this tpad does not implement Lookup yet")
            except tpad_client.NotFound as e:
                self.assertEqual(e.error, "io.tpad.Station.NotFound")
                self.assertEqual(e.parameters, {"devEUI": DEV})
            else:
                self.fail("Lookup of an unknown device did not raise NotFound")

    def test_cloud_unreachable_is_upstream_unavailable(self):
        with Client(self.d.station, timeout=30) as c:
            try:
                c.activate(DEV, tkm_info=TKM, qr_format="none")
            except tpad_client.MethodNotImplemented:
                self.skipTest("this tpad does not implement Activate yet")
            except tpad_client.UpstreamUnavailable as e:
                self.assertTrue(e.parameters["reason"])
            else:
                self.fail("Activate with the cloud unreachable did not fail")

    def test_admin_methods_not_on_station_socket(self):
        with Client(self.d.station, timeout=10) as c:
            with self.assertRaises(tpad_client.MethodNotFound):
                c.call("io.tpad.Admin.Status")
        with Client(self.d.admin, timeout=10, interface=tpad_client.ADMIN) as a:
            st = a.call("Status")
            self.assertEqual(st["version"], a.get_info()["version"])
            self.assertGreaterEqual(st["connections"]["admin"], 1)

    def test_call_more_on_single_reply_method(self):
        with Client(self.d.station, timeout=10) as c:
            replies = list(c.call_more("org.varlink.service.GetInfo"))
            self.assertEqual(len(replies), 1)
            self.assertEqual(replies[0]["product"], "tpad")
            self.assertEqual(c.get_info()["product"], "tpad")

    def test_daemon_gone_mid_session(self):
        c = Client(self.d.station, timeout=10)
        self.assertEqual(c.get_info()["product"], "tpad")
        self.d.stop()
        with self.assertRaises(tpad_client.TpadConnectionError) as e:
            c.get_info()
        self.assertIsInstance(e.exception, ConnectionError)
        self.assertTrue(c.closed)
        with self.assertRaises(tpad_client.TpadConnectionError) as e:
            c.get_info()
        self.assertIn("closed", str(e.exception))


class ConnectionErrors(TpadTestCase):
    """Connection failures raise TpadConnectionError with a message that says what to do."""

    def test_refused_at_a_limit_is_busy_not_a_broken_pipe(self):
        """tpad refuses a connection over limits.max-clients-per-uid with Busy and closes
        it, mostly before the client has written its call. The Python client, tpactl and
        libtpad-client (its C example station) each read that Busy rather than report the
        send that failed (Broken pipe), every time."""
        d = self.daemon(conf_extra="limits.max-clients-per-uid = 2").start()
        held = [d.station_client(), d.station_client()]
        try:
            for c in held:
                c.call("org.varlink.service.GetInfo")
            for _ in range(10):
                with self.assertRaises(tpad_client.Busy):
                    with Client(d.station, timeout=10) as c:
                        c.get_info()
                p = d.tpactl("--socket", d.station, "lookup", "--dev-eui", "0123456789ABCDEF",
                             check=1)
                self.assertIn("tpactl: Busy", p.stderr)
                self.assertIn("limits.max-clients*", p.stderr)
                self.assertNotIn("Broken pipe", p.stderr)
                p = subprocess.run([os.environ["EXAMPLE_STATION_C"], "0123456789ABCDEF",
                                    "31110123D345666E2DBD", "--socket", d.station],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 75, p.stderr)
                self.assertIn("io.tpad.Station.Busy", p.stderr)
        finally:
            for c in held:
                c.close()


    def test_missing_socket(self):
        path = os.path.join(self.tmp, "nope.sock")
        with self.assertRaises(tpad_client.TpadConnectionError) as e:
            Client(path, timeout=5)
        self.assertIsInstance(e.exception, ConnectionError)
        self.assertEqual(e.exception.path, path)
        self.assertIn(path, str(e.exception))
        self.assertIn("does not exist", str(e.exception))

    def test_stale_socket(self):
        path = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        with self.assertRaises(tpad_client.TpadConnectionError) as e:
            Client(path, timeout=5)
        self.assertIn("nothing listens", str(e.exception))

    def test_permission_hint_names_the_group(self):
        # As root the kernel never refuses, so check the message built for EACCES directly.
        err = PermissionError(errno.EACCES, "Permission denied")
        e = tpad_client._connect_error("/run/tpad/station.sock", err)
        self.assertIsInstance(e, tpad_client.TpadConnectionError)
        self.assertIn("tpad-station", str(e))
        e = tpad_client._connect_error("/run/tpad/admin.sock", err)
        self.assertIn("tpad-admin", str(e))

    def test_tpas_sockets_name_tpas(self):
        """A Client of tpas's apps socket (interface io.tpad.AS) names tpas and its groups
        in what it says, not tpad's."""
        err = PermissionError(errno.EACCES, "Permission denied")
        e = tpad_client._connect_error("/run/tpas/apps.sock", err, tpad_client.AS)
        self.assertIn("tpas-apps", str(e))
        e = tpad_client._connect_error("/run/tpas/admin.sock", err, tpad_client.AS_ADMIN)
        self.assertIn("tpas-admin", str(e))
        with self.assertRaises(tpad_client.TpadConnectionError) as e:
            Client(os.path.join(self.tmp, "nope.sock"), timeout=5, interface=tpad_client.AS)
        self.assertIn("is tpas running? (systemctl status tpas)", str(e.exception))

    def test_tpas_errors_are_raised_by_name(self):
        path = os.path.join(self.tmp, "apps.sock")
        failed = {"devEUI": DEV, "fCntDn": 7, "status": 500, "reason": "LRC answered 500",
                  "answer": "Internal error"}
        srv = FakeServer(path, {"io.tpad.AS.SendDownlink": [
            reply(failed, error="io.tpad.AS.LrcFailed"),
            reply(error="io.tpad.AS.Busy"),
            reply({"devEUI": DEV}, error="io.tpad.AS.UnknownDevice")]})
        try:
            with Client(path, timeout=5, interface=tpad_client.AS) as c:
                with self.assertRaises(tpad_client.LrcFailed) as e:
                    c.call("SendDownlink", devEUI=DEV, fPort=2, payload="01")
                self.assertEqual((e.exception.fcnt_dn, e.exception.status, e.exception.answer),
                                 (7, 500, "Internal error"))
                self.assertEqual(srv.calls[0]["method"], "io.tpad.AS.SendDownlink")
                with self.assertRaises(tpad_client.Busy):
                    c.call("SendDownlink", devEUI=DEV, fPort=2, payload="01")
                with self.assertRaises(tpad_client.UnknownDevice):
                    c.call("SendDownlink", devEUI=DEV, fPort=2, payload="01")
        finally:
            srv.close()

    def test_no_reply_times_out(self):
        path = os.path.join(self.tmp, "silent.sock")
        srv = FakeServer(path, {})
        try:
            c = Client(path, timeout=0.3)
            t0 = time.monotonic()
            with self.assertRaises(tpad_client.TpadTimeout) as e:
                c.get_info()
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIsInstance(e.exception, TimeoutError)
            self.assertIsInstance(e.exception, tpad_client.TpadConnectionError)
            self.assertTrue(c.closed)
        finally:
            srv.close()

    def test_garbage_reply_is_protocol_error(self):
        path = os.path.join(self.tmp, "garbage.sock")
        srv = FakeServer(path, {"org.varlink.service.GetInfo": [b"{not json"]})
        try:
            c = Client(path, timeout=5)
            with self.assertRaises(tpad_client.TpadProtocolError):
                c.get_info()
            self.assertTrue(c.closed)
        finally:
            srv.close()

    def test_bad_label_base64_is_protocol_error(self):
        path = os.path.join(self.tmp, "badqr.sock")
        dev = {"devEUI": DEV, "joinEUI": "0" * 16, "profileId": "0" * 8, "ownerToken": "AB",
               "qrText": "LW:D0", "state": "ISSUED", "source": "stored"}
        srv = FakeServer(path, {"io.tpad.Station.Lookup": [
            reply({"device": dev, "qr": {"format": "png", "data": "!!not base64!!"}})]})
        try:
            with Client(path, timeout=5) as c:
                with self.assertRaises(tpad_client.TpadProtocolError):
                    c.lookup(DEV, qr_format="png")
        finally:
            srv.close()

    def test_call_more_stream_and_abandoned_stream(self):
        path = os.path.join(self.tmp, "stream.sock")
        stream = [reply({"n": i}, continues=True) for i in range(3)] + [reply({"done": True})]
        srv = FakeServer(path, {
            "io.tpad.Admin.Export": stream,
            "io.tpad.Admin.Import": [reply({"n": 0}, continues=True),
                                     reply({"devEUI": DEV}, error="io.tpad.Admin.NotFound")],
            "org.varlink.service.GetInfo": [reply({"product": "fake"})],
        })
        try:
            with Client(path, timeout=5, interface=tpad_client.ADMIN) as c:
                got = list(c.call_more("Export", format="png"))
                self.assertEqual(got, [{"n": 0}, {"n": 1}, {"n": 2}, {"done": True}])
                self.assertEqual(srv.calls[0], {"method": "io.tpad.Admin.Export",
                                                "parameters": {"format": "png"}, "more": True})
                # Stop after the first reply: the rest is drained before the next call.
                it = c.call_more("Export", format="svg")
                self.assertEqual(next(it), {"n": 0})
                it.close()
                self.assertEqual(c.get_info(), {"product": "fake"})
                # An error reply ends the stream with its exception.
                it = c.call_more("Import", rows=[])
                self.assertEqual(next(it), {"n": 0})
                with self.assertRaises(tpad_client.NotFound):
                    next(it)
                self.assertEqual(c.get_info(), {"product": "fake"})
        finally:
            srv.close()

    def test_an_abandoned_followed_stream_is_said_not_waited_on(self):
        """A followed Uplinks never ends: a call after one left unread used to wait for
        its end (for ever, or the timeout) to drain it. It is refused at once, saying how
        to go on; a stream with follow false is drained as any other."""
        endless = FakeServer(os.path.join(self.tmp, "follow.sock"), {
            "io.tpad.AS.Uplinks": [reply({"uplink": {"seq": i}}, continues=True)
                                   for i in range(3)],
            "io.tpad.AS.Status": [reply({"version": "fake"})]})
        ending = FakeServer(os.path.join(self.tmp, "nofollow.sock"), {
            "io.tpad.AS.Uplinks": [reply({"uplink": {"seq": 1}}, continues=True),
                                   reply({"uplink": {"seq": 2}})],
            "io.tpad.AS.Status": [reply({"version": "fake"})]})
        try:
            with Client(endless.path, timeout=5, interface=tpad_client.AS) as c:
                it = c.call_more("Uplinks", after=0)
                self.assertEqual(next(it), {"uplink": {"seq": 0}})
                t0 = time.monotonic()
                with self.assertRaises(tpad_client.TpadError) as e:
                    c.call("Status")
                self.assertLess(time.monotonic() - t0, 1)
                self.assertEqual(e.exception.error, "tpad.client.StreamOpen")
                self.assertIn("close this Client and open another", str(e.exception))
            with Client(ending.path, timeout=5, interface=tpad_client.AS) as c:
                it = c.call_more("Uplinks", after=0, follow=False)
                self.assertEqual(next(it), {"uplink": {"seq": 1}})
                it.close()
                self.assertEqual(c.call("Status"), {"version": "fake"})
        finally:
            endless.close()
            ending.close()

    def test_a_print_failure_does_not_put_the_device_in_its_message(self):
        """str() of an error is what a station logs: a PrintFailed's device (its
        ownerToken and AppKey) is only its DevEUI there, as in libtpad-client's messages;
        the whole device stays in .parameters."""
        device = {"devEUI": DEV, "ownerToken": "DF1C" * 8, "appKey": "F31D" * 8}
        e = tpad_client.TpadError("io.tpad.Station.PrintFailed",
                                  {"device": device, "printer": "line1",
                                   "reason": "cannot connect", "jobs": [1, 2]})
        self.assertEqual(str(e), f"PrintFailed: device={DEV}, printer=line1, "
                                 "reason=cannot connect, jobs=...")
        self.assertEqual(e.parameters["device"], device)

    def test_none_parameters_are_left_out(self):
        path = os.path.join(self.tmp, "params.sock")
        srv = FakeServer(path, {"io.tpad.Station.Activate": [
            reply(error="io.tpad.Station.Busy")]})
        try:
            with Client(path, timeout=5) as c:
                with self.assertRaises(tpad_client.Busy):
                    c.activate(DEV, generate_app_key=True, qr_format="svg", qr_margin=0)
            self.assertEqual(srv.calls[0]["parameters"], {
                "devEUI": DEV, "generateAppKey": True, "qr": {"format": "svg", "margin": 0}})
        finally:
            srv.close()


class RetiredDevice(DxBase):
    """A retired device is raised as Retired, with its reason (retiring needs the dx-maker
    profile's delete)."""

    def test_lookup_of_a_retired_device(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        self.activate(d, DEV)
        d.tpactl("--socket", d.admin, "retire", DEV, "--reason", "scrapped: cracked case",
                 check=0)
        with Client(d.station, timeout=10) as c:
            with self.assertRaises(tpad_client.Retired) as e:
                c.lookup(DEV)
        self.assertIn("cracked case", e.exception.reason)


class EndToEnd(TpadTestCase):
    """Activation through the client: tpad against tpa-sim over TLS-PSK."""

    def setUp(self):
        super().setUp()
        psk = secrets.token_hex(16)
        self.s = self.sim(psk).start()
        self.d = self.daemon(upstream_url=self.s.url(), psk_hex=psk).start()
        with Client(self.d.station, timeout=10) as c:
            try:
                c.lookup("FFFFFFFFFFFFFFFF")
            except tpad_client.MethodNotImplemented:
                self.skipTest("this tpad does not implement Lookup yet")
            except tpad_client.NotFound:
                pass

        def ready():
            with Client(self.d.admin, timeout=10) as a:
                up = a.call("io.tpad.Admin.Status")["upstream"]
            return all(s["state"] == "ready" for s in up["sessions"])
        wait_for(ready, 15, "warm upstream sessions")

    def activate(self, *args, **kw):
        with Client(self.d.station, timeout=30) as c:
            try:
                return c.activate(*args, **kw)
            except tpad_client.MethodNotImplemented:
                self.skipTest("this tpad does not implement Activate yet")

    def test_activate_secure_element_with_png_label(self):
        dev = self.activate(DEV.lower(), tkm_info=TKM, serial="SN-42", qr_format="png")
        self.assertEqual(dev.dev_eui, DEV)
        self.assertEqual(dev.state, "ISSUED")
        self.assertEqual(dev.source, "live")
        self.assertEqual(dev.serial, "SN-42")
        self.assertIsNone(dev.app_key)
        self.assertFalse(dev.has_app_key)
        int(dev.owner_token, 16)
        self.assertEqual(dev.owner_token, dev.owner_token.upper())
        body, _, crc = dev.qr_text.rpartition(":C")
        self.assertEqual(int(crc, 16), crc16_modbus(body.encode()))
        self.assertTrue(body.startswith(f"LW:D0:{dev.join_eui}:{DEV}:{dev.profile_id}:"))
        self.assertIn("O" + dev.owner_token, body.split(":"))
        self.assertEqual(dev.qr_format, "png")
        self.assertTrue(dev.qr_bytes.startswith(PNG_MAGIC))
        label = os.path.join(self.tmp, "label.png")
        dev.save_label(label)
        if shutil.which("zbarimg"):
            out = subprocess.run(["zbarimg", "-q", "--raw", label], capture_output=True,
                                 text=True, timeout=30)
            self.assertEqual(out.stdout.strip(), dev.qr_text)

        # Again: the same token, from the store, and the cloud was asked once.
        again = self.activate(DEV, tkm_info=TKM, serial="SN-42", qr_format="none")
        self.assertEqual(again.owner_token, dev.owner_token)
        self.assertIsNone(again.qr_bytes)
        with self.assertRaises(ValueError):
            again.save_label(label)
        with Client(self.d.station, timeout=10) as c:
            found = c.lookup(DEV, qr_format="svg")
        self.assertEqual(found.owner_token, dev.owner_token)
        self.assertEqual(found.source, "stored")
        self.assertIn(b"<svg", found.qr_bytes)
        counters = self.s.counters()
        self.assertEqual(counters["imports"], 1)
        self.assertEqual(counters["duplicate_imports"], 0)

    def test_generated_app_key_and_conflict(self):
        dev = self.activate("70B3D50000000001", generate_app_key=True, qr_format="none")
        self.assertTrue(dev.has_app_key)
        self.assertEqual(len(dev.app_key), 32)
        int(dev.app_key, 16)
        self.assertEqual(self.s.devices()[0]["appKey"].upper(), dev.app_key)
        self.activate(DEV, tkm_info=TKM, qr_format="none")
        with self.assertRaises(tpad_client.Conflict) as e:
            self.activate(DEV, tkm_info="31110123D345666E0000", qr_format="none")
        self.assertEqual(e.exception.parameters["devEUI"], DEV)

    def test_outcome_unknown_says_when_to_ask_again(self):
        """OutcomeUnknown carries the retryAfter the interface declares, as an attribute."""
        self.s.faults(drop_before_answer=1.0)
        with self.assertRaises(tpad_client.OutcomeUnknown) as e:
            self.activate("70B3D50000000002", generate_app_key=True, qr_format="none")
        self.assertEqual(e.exception.retry_after, e.exception.parameters["retryAfter"])
        self.assertGreater(e.exception.retry_after, 0)
        self.s.faults(drop_before_answer=0.0)
        time.sleep(e.exception.retry_after)
        dev = wait_for(lambda: self.activate("70B3D50000000002", generate_app_key=True,
                                             qr_format="none"), 15, "settled")
        self.assertEqual(dev.source, "stored")
        self.assertEqual(self.s.counters()["imports"], 1)

    def test_example_station(self):
        label = os.path.join(self.tmp, "station-label.png")
        p = subprocess.run([sys.executable, EXAMPLE, DEV, TKM, "--socket", self.d.station,
                            "--label", label, "--serial", "SN-7"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        fields = dict(line.split(None, 1) for line in p.stdout.splitlines())
        with Client(self.d.station, timeout=10) as c:
            dev = c.lookup(DEV)
        self.assertEqual(fields["ownerToken"], dev.owner_token)
        self.assertEqual(fields["qrText"], dev.qr_text)
        with open(label, "rb") as f:
            self.assertTrue(f.read().startswith(PNG_MAGIC))

        p = subprocess.run([sys.executable, EXAMPLE, "0123", TKM, "--socket", self.d.station,
                            "--label", label], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("devEUI", p.stderr)
        p = subprocess.run([sys.executable, EXAMPLE, DEV, TKM, "--socket",
                            os.path.join(self.tmp, "none.sock")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 3)
        self.assertIn("does not exist", p.stderr)
        p = subprocess.run([sys.executable, EXAMPLE, DEV, TKM, "--generate-app-key"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    tpadtest.main()
