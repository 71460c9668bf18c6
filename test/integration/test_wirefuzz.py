"""Outside-in fuzzing of tpad's and tpas's connections through their real sockets (see
wirefuzz.py for what is sent and checked). A few fixed seeds here; a longer run on demand:

    WIREFUZZ_SEED=7 WIREFUZZ_BATCHES=200 meson test -C build-asan test_wirefuzz -t 20
"""

import os
import secrets
import socket
import sys
import threading
import time

import tpadtest
import wirefuzz
import test_conformance
from test_tpas import DEV, TpasCase
from tpadtest import Client, TpadTestCase, free_port, wait_for

SERVICE = wirefuzz.SERVICE
SEEDS = [int(x) for x in os.environ.get("WIREFUZZ_SEED", "1").split()]
BATCHES = int(os.environ.get("WIREFUZZ_BATCHES", "3"))
PER_BATCH = int(os.environ.get("WIREFUZZ_PER_BATCH", "10"))
MAX_MESSAGE = 64 * 1024
PAD = "p" * 12000  # a field the LRC adds, kept in the stream: uplinks big enough to pause it


def metrics_value(port, name):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = tpadtest.read_all(s).decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def get_metrics(port):
    return (b"GET /metrics HTTP/1.1\r\nHost: x\r\n" +
            (b"Accept: application/openmetrics-text\r\n" if port % 2 else b"") + b"\r\n")


class Fuzz:
    """What both daemons' runs share: the batches, and the checks between them."""

    def alive(self, proc, log_path, sockets, product):
        self.assertIsNone(proc.poll(), "the daemon exited")
        self.assertIsNone(tpadtest.sanitizer_report(log_path))
        for path in sockets:
            with Client(path, 10) as c:
                self.assertEqual(c.call(f"{SERVICE}.GetInfo")["product"], product)

    def valid(self, method):
        """Valid parameters for method, None when the walk has none."""
        try:
            return self.params(method)
        except KeyError:
            return None

    def run_seeds(self, fuzzers, check):
        for seed in SEEDS:
            t0 = time.monotonic()
            totals = wirefuzz.run_batches(fuzzers, seed, BATCHES, PER_BATCH, check)
            print(f"\nwirefuzz {type(self).__name__} seed {seed}: {totals} in "
                  f"{time.monotonic() - t0:.1f} s", file=sys.stderr)


class TpadWireFuzz(Fuzz, TpadTestCase):
    # Valid parameters as the conformance walk has them (its methods, not its tests).
    params = test_conformance.Conformance.params
    new_eui = test_conformance.Conformance.new_eui

    def test_fuzz(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        self.mport = free_port()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk, conf_extra=f"""
upstream.sessions = 2
upstream.request-timeout = 2s
metrics.listen = 127.0.0.1:{self.mport}
limits.max-message = {MAX_MESSAGE}
limits.message-timeout = 2s
limits.max-pending-calls = 8
limits.max-output = 64K""").start()
        self.n = 0
        self.known = self.new_eui()
        with d.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": self.known,
                                                "tkmInfo": "31110123D345666E2DBD"})
        ifaces = tpadtest.interfaces()
        sockets = {d.station: [SERVICE, "io.tpad.Station"],
                   d.admin: [SERVICE, "io.tpad.Station", "io.tpad.Admin"]}

        def safe_path():
            return os.path.join(self.tmp, f"backup-{self.new_eui()}.db")

        def check(batch):
            self.alive(d.proc, d.log_path, sockets, "tpad")
            self.assertGreaterEqual(metrics_value(self.mport, "tpad_calls_in_flight"), 0)
        self.run_seeds({
            "varlink": lambda rng: wirefuzz.VarlinkFuzz(rng, sockets, ifaces, self.valid,
                                                        lambda f: False, safe_path,
                                                        MAX_MESSAGE),
            "metrics": lambda rng: wirefuzz.HttpFuzz(rng, self.mport,
                                                     lambda r: get_metrics(self.mport), 4096),
        }, check)

        # Every client gone: nothing in flight, nothing owed, no connection but this one.
        def settled():
            with d.admin_client() as a:
                st = a.call("io.tpad.Admin.Status")
            return (st["connections"] == {"station": 0, "admin": 1} and
                    st["callsInFlight"] == 1 and st["outputOwed"] == 0) or None
        wait_for(settled, 30, "no call in flight, no output owed, no client left")


class TpasWireFuzz(Fuzz, TpasCase):
    params = test_conformance.TpasConformance.params

    def test_fuzz(self):
        self.mport = free_port()
        s, t = self.served_lrc(extra=f"""[metrics]
listen = 127.0.0.1:{self.mport}
[tunnel]
max-body = 64K
timeout = 2s
[limits]
max-message = {MAX_MESSAGE}
message-timeout = 2s
max-pending-calls = 8
max-output = 64K
""")
        self.lrc_sim = s
        s.add_device(DEV, self.import_astk(t))
        for i in range(40):  # enough for a stream to pause on a slow reader
            self.assertEqual(s.uplink(DEV, b"u%d" % i, extra={"Pad": PAD})[0], 200)
        ifaces = tpadtest.interfaces()
        sockets = {t.apps: [SERVICE, "io.tpad.AS"],
                   t.admin: [SERVICE, "io.tpad.AS", "io.tpad.ASAdmin"]}

        def open_ended(frame):  # a following stream answers nothing after it in time
            return b"Uplinks" in frame and b"more" in frame

        def last_seq():
            with Client(t.admin, 10) as c:
                return c.call("io.tpad.AS.Status")["journal"]["lastSeq"]

        def uplink(rng):
            target, body, ctype = s.build_uplink(DEV, b"f", fcnt=rng.randrange(10**6),
                                                 extra={"Pad": PAD[:rng.randrange(2000)]})
            return (b"POST /" + target.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: " +
                    ctype.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

        # Uplinks go on arriving meanwhile: streams caught up or paused are told.
        stop = threading.Event()

        def lrc():
            while not stop.wait(0.05):
                try:
                    s.uplink(DEV, b"live")
                except OSError:
                    pass
        poster = threading.Thread(target=lrc, daemon=True)
        poster.start()
        self.addCleanup(poster.join)
        self.addCleanup(stop.set)

        def check(batch):
            self.alive(t.proc, t.log_path, sockets, "tpas")
            self.assertEqual(s.uplink(DEV, b"check")[0], 200)
            self.assertGreaterEqual(metrics_value(self.mport, "tpas_calls_in_flight"), 0)
        self.run_seeds({
            "varlink": lambda rng: wirefuzz.VarlinkFuzz(rng, sockets, ifaces, self.valid,
                                                        open_ended, lambda: "/nonexistent",
                                                        MAX_MESSAGE),
            "stream": lambda rng: wirefuzz.StreamFuzz(rng, t.apps, last_seq),
            "tunnel": lambda rng: wirefuzz.HttpFuzz(rng, t.port, uplink, 64 * 1024),
            "metrics": lambda rng: wirefuzz.HttpFuzz(rng, self.mport,
                                                     lambda r: get_metrics(self.mport), 4096),
        }, check)
        stop.set()

        def settled():
            st = t.status()
            return (st["subscribers"] == 0 and st["connections"] == {"apps": 0, "admin": 1}
                    and metrics_value(self.mport, "tpas_calls_in_flight") == 0) or None
        wait_for(settled, 30, "no stream, call in flight or client left")


if __name__ == "__main__":
    tpadtest.main()
