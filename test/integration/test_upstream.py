"""Integration tests of the upstream pool through the real tpad: Status.upstream and STATUS=."""

import secrets

import tpadtest
from tpadtest import TpadTestCase, wait_for

SUITE = "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256"


class Upstream(TpadTestCase):
    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")["upstream"]

    def test_warm_sessions_in_status(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 3").start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "warm upstream sessions")
        up = self.status(d)
        self.assertEqual(up["url"], s.url())
        self.assertEqual(up["breaker"], "closed")
        self.assertEqual(up["queue"], 0)
        self.assertEqual(len(up["sessions"]), 3)
        for sess in up["sessions"]:
            self.assertEqual(sess["state"], "ready")
            self.assertEqual(sess["ciphersuite"], SUITE)
            self.assertIsNone(sess["lastError"])
        self.assertEqual(set(up["latency"]), {"p50", "p99"})
        counters = s.counters()
        self.assertEqual(counters["handshakes"], 3)
        self.assertEqual(counters["connections"], 3)
        d.wait_notify("upstream ok 3/3 ready", 15)

    def test_wrong_psk_keeps_serving(self):
        s = self.sim(secrets.token_hex(16)).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=secrets.token_hex(16),
                        conf_extra="upstream.sessions = 2").start()

        def reported():
            up = self.status(d)
            return up["state"] == "down" and all(
                x["lastError"] and "PSK" in x["lastError"] for x in up["sessions"])
        wait_for(reported, 15, "a PSK error in Status")
        # The daemon lives and answers; nothing reached the cloud's API.
        self.assertEqual(self.status(d)["state"], "down")
        self.assertEqual(s.counters()["requests"], 0)

    def test_server_restart(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 2").start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "warm upstream sessions")
        port = s.port
        s.stop()
        wait_for(lambda: self.status(d)["state"] == "down", 15, "sessions noticing the loss")
        up = self.status(d)
        self.assertTrue(all(x["lastError"] for x in up["sessions"]), up)
        s.start(port)
        wait_for(lambda: self.status(d)["state"] == "ok", 20, "sessions coming back")
        up = self.status(d)
        self.assertTrue(all(x["reconnects"] >= 1 for x in up["sessions"]), up)
        with d.station_client() as c:
            dev = c.call("io.tpad.Station.Activate",
                         {"devEUI": "70B3D50000000001", "tkmInfo": "31110123D345666E2DBD"})
        self.assertEqual(dev["device"]["state"], "ISSUED")


if __name__ == "__main__":
    tpadtest.main()
