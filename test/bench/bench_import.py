#!/usr/bin/env python3
"""bench_import: tpactl import rate (rows/s) against the pool size at a 40 ms round trip.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_import.py [BUILD] [--rows-per-session N] [--sessions 1,4,16]

For each pool size (upstream.sessions), a fresh tpad imports a CSV of new devices with
TKM_INFO through delay-proxy (--delay-ms 20 each way = 40 ms RTT) to tpa-sim over
TLS-PSK, with `tpactl import --concurrency 64`. The rate is rows over the wall time of
the whole tpactl run (reading and checking the file, chunked Import calls, every row
committed PENDING then ISSUED). The ideal column is sessions / RTT: one request in
flight per session. tpa-sim's counters prove one import per row and no duplicates.
"""

import argparse
import os
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_upstream  # noqa: E402
from bench_upstream import Bench, counter_delta, machine_line, table  # noqa: E402


def write_rows(path, n):
    """A CSV of n new devices with a Secure Element."""
    with open(path, "w") as f:
        f.write("devEUI,tkmInfo,serial\n")
        for i in range(n):
            f.write(f"{secrets.token_hex(8).upper()},{secrets.token_hex(10).upper()},"
                    f"SN-{i:07d}\n")


def run(b, sessions, rows, delay_ms, concurrency):
    s = b.sim()
    proxy = b.delay_proxy(s.port, delay_ms)
    d = b.tpad(proxy, f"upstream.sessions = {sessions}\nupstream.request-timeout = 30s")
    b.wait_warm(d, 60)
    path = os.path.join(b.subdir("csv"), "rows.csv")
    write_rows(path, rows)
    before = s.counters()
    t0 = time.monotonic()
    p = subprocess.run([bench_upstream.tpadtest.TPACTL, "--socket", d.admin, "import", path,
                        "--concurrency", str(concurrency)], capture_output=True, text=True)
    secs = time.monotonic() - t0
    delta = counter_delta(s.counters(), before)
    if p.returncode != 0:
        print(f"warning: tpactl import exited {p.returncode}: {p.stderr.strip()}",
              file=sys.stderr)
    b.stop_daemon(d)
    s.stop()
    return secs, delta, p.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="meson build directory")
    ap.add_argument("--sessions", default="1,4,16", help="pool sizes to measure")
    ap.add_argument("--rows-per-session", type=int, default=200,
                    help="rows imported per session of the pool")
    ap.add_argument("--concurrency", type=int, default=64, help="tpactl --concurrency")
    ap.add_argument("--delay-ms", type=int, default=20, help="one-way delay of the proxy")
    ap.add_argument("--workdir", help="where stores and logs go (default: the build dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    rtt = 2 * a.delay_ms
    print("command: " + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    out = []
    with Bench(a.build, a.workdir, a.keep) as b:
        print(f"machine: {machine_line(b.dir)}")
        for sessions in [int(x) for x in a.sessions.split(",")]:
            rows = sessions * a.rows_per_session
            secs, delta, summary = run(b, sessions, rows, a.delay_ms, a.concurrency)
            ideal = sessions * 1000 / rtt
            out.append([sessions, rows, f"{secs:.2f}", f"{rows / secs:.0f}",
                        f"{rows / secs / sessions:.1f}", f"{ideal:.0f}",
                        f"{100 * rows / secs / ideal:.0f}%", delta["imports"],
                        delta["duplicate_imports"], delta["handshakes"]])
            print(f"  sessions {sessions}: {summary}", file=sys.stderr)
    print(f"\nImport rate at {rtt} ms RTT (delay-proxy --delay-ms {a.delay_ms}), TLS-PSK, "
          f"tpactl import --concurrency {a.concurrency}, rows with TKM_INFO:\n")
    print(table(["upstream.sessions", "rows", "seconds", "rows/s", "rows/s per session",
                 "ideal rows/s (sessions / RTT)", "of ideal", "sim imports",
                 "sim duplicates", "sim handshakes"], out))


if __name__ == "__main__":
    main()
