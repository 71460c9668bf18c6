#!/usr/bin/env python3
"""bench_pg: live activations with PNG labels on PostgreSQL (1 and 2 tpads) against SQLite.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_pg.py BUILD [--count N] [--repeats R] [--keep]

In one run, against tpa-sim over TLS-PSK on loopback, with a throw-away PostgreSQL 15
cluster (test/pg/pgcluster.sh, synchronous_commit = on, local Unix socket):
1. activations per second with a PNG label each (loadgen, pipelined station connections):
   one tpad on SQLite; one tpad on PostgreSQL; two tpads sharing one PostgreSQL database
   (distinct devices, loaded at once; the total rate). Goal: >= 2,000/s in total and at
   least half of SQLite's rate.
2. the median latency of one station's sequential activations at 40 ms cloud RTT
   (delay-proxy), SQLite against PostgreSQL: the latency PostgreSQL adds (goal <= 3 ms).
"""

import argparse
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_upstream import Bench, machine_line, table  # noqa: E402
import tpadtest  # noqa: E402


def pg_tpad(b, cluster, url, port, conf_extra, key, instance):
    d = tpadtest.Daemon(b.subdir("tpad"), upstream_url=f"https://127.0.0.1:{port}",
                        psk_hex=b.psk, conf_extra=conf_extra, pg_url=url,
                        pg_password=cluster.password, key_hex=key, instance=instance)
    b.daemons.append(d)
    return d.start()


def rate_of(b, ds, connections, depth, count, base):
    """Load every tpad in ds at once (distinct devices); total activations per second."""
    results = [None] * len(ds)

    def run(i, d):
        results[i] = b.loadgen(d, connections, depth, count, base + i * 0x10000000, qr="png")

    ts = [threading.Thread(target=run, args=(i, d)) for i, d in enumerate(ds)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = max(r["seconds"] for r in results)
    return sum(r["ok"] for r in results) / secs, results


def median_rate(b, ds, sim, connections, depth, count, repeats, base):
    rate_of(b, ds, connections, depth, min(1000, count), base)  # warm-up
    rates = []
    for k in range(repeats):
        before = sim.counters()
        r, _ = rate_of(b, ds, connections, depth, count, base + (k + 1) * 0x1000000)
        after = sim.counters()
        if after["duplicate_imports"] != before["duplicate_imports"]:
            sys.exit("duplicate imports: the benchmark is invalid")
        rates.append(r)
    rates.sort()
    return rates[len(rates) // 2], [round(x) for x in rates]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="meson build directory")
    ap.add_argument("--count", type=int, default=10000, help="activations per tpad per run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--sessions", type=int, default=4, help="upstream.sessions")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--delay-ms", type=int, default=20, help="one-way delay of the proxy")
    ap.add_argument("--latency-count", type=int, default=100)
    ap.add_argument("--workdir", help="where stores and logs go (default: the build dir)")
    ap.add_argument("--json", help="also write every result to this file")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    out = {}
    with Bench(a.build, a.workdir, a.keep) as b:
        cluster = tpadtest.PgCluster(b.dir).start()
        try:
            conf = f"upstream.sessions = {a.sessions}"
            key = os.urandom(32).hex()
            s = b.sim()
            # 1. throughput
            d = b.tpad(s.port, conf)
            b.wait_warm(d)
            out["sqlite"] = median_rate(b, [d], s, a.connections, a.depth, a.count, a.repeats,
                                        0x70B3D53000000000)
            b.stop_daemon(d)
            d = pg_tpad(b, cluster, cluster.new_database(), s.port, conf, key, "bench-1")
            b.wait_warm(d)
            out["pg1"] = median_rate(b, [d], s, a.connections, a.depth, a.count, a.repeats,
                                     0x70B3D54000000000)
            b.stop_daemon(d)
            url = cluster.new_database()
            ds = [pg_tpad(b, cluster, url, s.port, conf, key, f"bench-{i}") for i in range(2)]
            for d in ds:
                b.wait_warm(d)
            out["pg2"] = median_rate(b, ds, s, a.connections, a.depth, a.count, a.repeats,
                                     0x70B3D55000000000)
            st = b.status(ds[0])["store"]
            out["pg2_store"] = {k: st[k] for k in ("commits", "ops", "meanOpsPerCommit",
                                                   "meanCommitMs", "commitLatencyBucketsMs")}
            for d in ds:
                b.stop_daemon(d)
            # 2. latency at 40 ms RTT
            proxy = b.delay_proxy(s.port, a.delay_ms)
            lat = {}
            for name in ("sqlite", "postgresql"):
                if name == "sqlite":
                    d = b.tpad(proxy, conf)
                else:
                    d = pg_tpad(b, cluster, cluster.new_database(), proxy, conf, key, "lat")
                b.wait_warm(d)
                b.loadgen(d, 1, 1, 3, 0x70B3D56000000000 + len(lat) * 0x1000000, qr="png")
                r = b.loadgen(d, 1, 1, a.latency_count,
                              0x70B3D57000000000 + len(lat) * 0x1000000, qr="png")
                lat[name] = r["p50_ms"]
                b.stop_daemon(d)
            out["latency_p50_ms"] = lat
        finally:
            cluster.stop()
    sq, pg1, pg2 = out["sqlite"][0], out["pg1"][0], out["pg2"][0]
    added = out["latency_p50_ms"]["postgresql"] - out["latency_p50_ms"]["sqlite"]
    print(machine_line(a.build))
    print(table(["store", "activations/s (median)", "runs", "vs SQLite"],
                [["SQLite, 1 tpad", f"{sq:,.0f}", out["sqlite"][1], "1.00"],
                 ["PostgreSQL, 1 tpad", f"{pg1:,.0f}", out["pg1"][1], f"{pg1 / sq:.2f}"],
                 ["PostgreSQL, 2 tpads, total", f"{pg2:,.0f}", out["pg2"][1],
                  f"{pg2 / sq:.2f}"]]))
    print(f"median latency at {2 * a.delay_ms} ms RTT: SQLite "
          f"{out['latency_p50_ms']['sqlite']:.1f} ms, PostgreSQL "
          f"{out['latency_p50_ms']['postgresql']:.1f} ms: +{added:.2f} ms (goal <= 3 ms)")
    print("PostgreSQL, 2 tpads, first tpad's store:", json.dumps(out["pg2_store"]))
    print(f"goal >= 2,000/s total and >= half of SQLite: "
          f"{'met' if max(pg1, pg2) >= 2000 and max(pg1, pg2) >= sq / 2 else 'NOT met'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
