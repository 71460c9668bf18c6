"""Interoperability: tpad's TLS-PSK client against stunnel4 (OpenSSL) in front of tpa-sim."""

import os
import shutil
import subprocess
import time

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, free_port, wait_for

TKM = "31110123D345666E2DBD"
# stunnel takes the key as the bytes of the text after "IDENTITY:"; tpad takes hex.
PSK_TEXT = "tpad-interop-key-0123456789abcde"


class Stunnel(TpadTestCase):
    def setUp(self):
        super().setUp()
        if not shutil.which("stunnel4") and not shutil.which("stunnel"):
            self.skipTest("stunnel4 is not installed")
        self.sim_ = self.sim("00" * 16, plain=True).start()
        self.port = free_port()
        secrets_path = os.path.join(self.tmp, "psk.txt")
        fd = os.open(secrets_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{tpadtest.PSK_IDENTITY}:{PSK_TEXT}\n")
        conf = os.path.join(self.tmp, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"foreground = yes\npid =\ndebug = 5\n"
                    f"[tpa]\naccept = 127.0.0.1:{self.port}\n"
                    f"connect = 127.0.0.1:{self.sim_.port}\n"
                    f"ciphers = PSK\nsslVersionMin = TLSv1.2\nsslVersionMax = TLSv1.2\n"
                    f"PSKsecrets = {secrets_path}\n")
        self.log = open(os.path.join(self.tmp, "stunnel.log"), "wb")
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        self.stunnel = subprocess.Popen([exe, conf], stdout=self.log, stderr=self.log)
        wait_for(self.listening, 10, "stunnel to listen")

    def listening(self):
        import socket
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def tearDown(self):
        self.stunnel.terminate()
        self.stunnel.wait(10)
        self.log.close()
        super().tearDown()

    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")

    def test_activation_through_stunnel(self):
        d = self.daemon(upstream_url=f"https://127.0.0.1:{self.port}",
                        psk_hex=PSK_TEXT.encode().hex()).start()
        wait_for(lambda: all(s["state"] == "ready" for s in self.status(d)["upstream"]["sessions"]),
                 15, "sessions through stunnel")
        suites = {s["ciphersuite"] for s in self.status(d)["upstream"]["sessions"]}
        self.assertTrue(all("PSK" in s for s in suites), suites)
        with d.station_client() as c:
            dev = c.call("io.tpad.Station.Activate",
                         {"devEUI": "0000000000000A01", "tkmInfo": TKM})["device"]
            again = c.call("io.tpad.Station.Activate",
                           {"devEUI": "0000000000000A01", "tkmInfo": TKM})["device"]
        self.assertEqual(dev["source"], "live")
        self.assertEqual(again["source"], "stored")
        self.assertEqual(self.sim_.devices()[0]["ownerToken"].upper(), dev["ownerToken"])
        self.assertEqual(self.sim_.counters()["imports"], 1)

    def test_wrong_identity_refused(self):
        d = self.daemon(upstream_url=f"https://127.0.0.1:{self.port}",
                        psk_hex=PSK_TEXT.encode().hex(),
                        conf_extra="upstream.psk-identity = somebody-else")
        d.start()
        def failing():
            s = self.status(d)["upstream"]["sessions"]
            return all(x["lastError"] for x in s)
        wait_for(failing, 15, "handshake errors")
        err = self.status(d)["upstream"]["sessions"][0]["lastError"]
        self.assertIn("handshake", err)
        with d.station_client() as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Station.Activate", {"devEUI": "0000000000000A02", "tkmInfo": TKM})
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
        self.assertEqual(self.sim_.counters()["imports"], 0)


if __name__ == "__main__":
    tpadtest.main()
