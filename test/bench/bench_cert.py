#!/usr/bin/env python3
"""bench_cert: one request's latency at 40 ms RTT with certificate TLS against TLS-PSK.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_cert.py BUILD [--delay-ms 20] [--count N] [--cold-repeats N]

For each TLS mode, tpa-sim behind delay-proxy (--delay-ms each way, 40 ms RTT):
- cold: the first activation right after tpad is ready with upstream.sessions = 1, which
  waits for the TCP connect and the full TLS handshake (certificate mode: ECDHE-ECDSA on
  P-256 with a test CA and server certificate made by openssl, chain and host name checked);
- warm: sequential activations from one station through a warm pool, which must stay at
  one round trip in both modes.
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "test", "integration"))

import bench_upstream  # noqa: E402
import tpadtest  # noqa: E402
from bench_upstream import Bench, table  # noqa: E402
from certs import PKI  # noqa: E402


class CertBench(Bench):
    """Bench with a certificate mode: tpa-sim --cert/--key, tpad upstream.tls = cert."""

    def __init__(self, build, mode, **kw):
        super().__init__(build, **kw)
        self.mode = mode
        if mode == "cert":
            self.pki = PKI(os.path.join(self.dir, "pki"))
            self.pki.ca("ca")
            self.crt, self.key = self.pki.issue("srv", "ca", "127.0.0.1",
                                                ["DNS:127.0.0.1", "IP:127.0.0.1"])

    def sim(self, extra=()):
        if self.mode == "psk":
            return super().sim(extra)
        s = tpadtest.Sim(self.subdir("sim"), None, extra=extra, registry=False,
                         tls_args=["--cert", self.crt, "--key", self.key])
        self.sims.append(s)
        return s.start()

    def tpad(self, port, conf_extra="", start=True):
        if self.mode == "cert":
            conf_extra = ("upstream.tls = cert\nupstream.auth = none\n"
                          f"upstream.ca-file = {self.pki.path('ca.crt')}\n" + conf_extra)
        return super().tpad(port, conf_extra, start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--delay-ms", type=int, default=20)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--cold-repeats", type=int, default=7)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    rows = []
    for mode in ("psk", "cert"):
        with CertBench(a.build, mode, keep=a.keep) as b:
            w, wdelta, suite = bench_upstream.warm_latency(b, a.delay_ms, a.count)
            first, spawn, hs = bench_upstream.cold_latency(b, a.delay_ms, a.cold_repeats)
            rows.append([mode, suite, f"{statistics.median(first):.1f}",
                         f"{min(first):.1f}–{max(first):.1f}", f"{w['p50_ms']:.1f}",
                         f"{w['p90_ms']:.1f}", wdelta["handshakes"], hs])
    print(f"\nOne activation's latency at {2 * a.delay_ms} ms RTT (delay-proxy --delay-ms "
          f"{a.delay_ms}), no QR image; cold = first call after READY=1 with one session, "
          f"median of {a.cold_repeats}; warm = {a.count} sequential calls:\n")
    print(table(["TLS", "ciphersuite", "cold median ms", "cold range ms", "warm median ms",
                 "warm p90 ms", "handshakes during warm run", "handshakes per cold start"],
                rows))


if __name__ == "__main__":
    main()
