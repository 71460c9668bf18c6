"""Integration tests of the upstream pool through the real tpad: Status.upstream and STATUS=."""

import os
import re
import secrets
import time

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
        # The breaker's log line says why, not only that it opened.
        with d.station_client() as c:
            for i in range(6):
                try:
                    c.call("io.tpad.Station.Activate", {"devEUI": f"70B3D5000000005{i}",
                                                        "tkmInfo": "31110123D345666E2DBD"})
                except tpadtest.VarlinkError:
                    pass
        wait_for(lambda: "circuit breaker open" in d.log_text_all(), 20, "the breaker line")
        line = [x for x in d.log_text_all().splitlines() if "circuit breaker open" in x][0]
        self.assertIn("PSK", line)

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

    def test_a_cloud_away_for_long_opens_the_breaker_once_in_the_log(self):
        """While the cloud stays away the breaker half-opens and opens again every
        upstream.breaker-cooldown: one outage is one "open" line (it was a line every
        cooldown, about 700 an hour at the default 5 s), then "closed" with how long."""
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 1\nupstream.breaker-threshold = 2\n"
                                   "upstream.breaker-cooldown = 300ms").start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "a warm upstream session")
        port = s.port
        s.stop()

        def reopened():
            with d.station_client() as c:
                try:
                    c.call("io.tpad.Station.Activate", {"devEUI": "70B3D50000000071",
                                                        "tkmInfo": "31110123D345666E2DBD"})
                except tpadtest.VarlinkError:
                    pass
            with d.admin_client() as a:
                text = a.call("io.tpad.Admin.Metrics")["text"]
            m = re.search(r"^tpad_upstream_breaker_opens_total (\d+)", text, re.M)
            return m and int(m.group(1)) >= 4
        wait_for(reopened, 30, "the breaker opening again and again")
        time.sleep(1.5)  # the once-a-second look
        log = d.log_text_all()
        self.assertEqual(log.count("circuit breaker open:"), 1, log)
        s.start(port)
        wait_for(lambda: "circuit breaker closed: the cloud answers again (open for "
                 in d.log_text_all(), 30, "the breaker closed in the log")
        self.assertEqual(d.log_text_all().count("circuit breaker open:"), 1)


    def test_the_cloud_simulator_keeps_what_it_answered_across_kill_9(self):
        """tpa-sim wrote its registry after answering: killed between the two, it forgot an
        import tpad had been told of (a crash test then saw a token "lost" that was not);
        each change is now journaled and synced before the answer leaves."""
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk).start()
        tokens = {}
        with d.station_client() as c:
            for i in range(5):
                e = f"70B3D5000000009{i}"
                tokens[e] = c.call("io.tpad.Station.Activate",
                                   {"devEUI": e, "tkmInfo": "31110123D345666E2DBD"}
                                   )["device"]["ownerToken"]
        # Each answered import is in the journal, synced before its answer left (a kill -9
        # between the answer and a save of the whole registry lost it before).
        with open(os.path.join(s.workdir, "sim-registry.json.journal")) as f:
            journal = f.read().upper()
        for e, token in tokens.items():
            self.assertIn(token, journal, e)
        port = s.port
        s.proc.kill()
        s.proc.wait()
        s.proc = None
        s.start(port)
        held = {x["deviceEUI"].upper(): x for x in s.devices()}
        self.assertEqual({e: held[e]["ownerToken"].upper() for e in tokens}, tokens)
        refs = {x["ref"] for x in held.values()}
        # A device imported after the restart gets a reference of its own.
        wait_for(lambda: self.status(d)["state"] == "ok", 20, "sessions coming back")
        with d.station_client() as c:
            c.call("io.tpad.Station.Activate",
                   {"devEUI": "70B3D500000000A0", "tkmInfo": "31110123D345666E2DBD"})
        new = [x for x in s.devices() if x["deviceEUI"].upper() == "70B3D500000000A0"]
        self.assertNotIn(new[0]["ref"], refs)


if __name__ == "__main__":
    tpadtest.main()
