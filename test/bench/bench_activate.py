#!/usr/bin/env python3
"""bench_activate: live activations with PNG labels through tpad, against the no-tpad baseline.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_activate.py BUILD [--count N] [--keep]

In one run, against tpa-sim over TLS-PSK on loopback:
1. tpad, activations per second with a PNG label each (C load generator, pipelined
   station connections), store with synchronous=FULL on the local disk; goal >= 2,000/s.
2. tpad, the median latency of one station's sequential activations (PNG label) with a
   40 ms round trip between tpad and tpa-sim (delay-proxy --delay-ms 20); goal <= 45 ms.
3. The baseline a line admin would script without tpad (baseline_activate.sh: stunnel4 as
   the TLS-PSK client, one curl per device, one qrencode per label), devices per second on
   loopback and its per-device latency at the same 40 ms round trip; once with stunnel's
   default TLS session resumption and once with sessionResume = no (a full handshake per
   device).
Then a table with both and the ratio.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_upstream import Bench, best_of, counter_delta, machine_line, table  # noqa: E402
import tpadtest  # noqa: E402

GOAL_RATE = 2000
GOAL_LATENCY_MS = 45


def tpad_throughput(b, count, connections, depth, repeats, sessions, generate_app_key=False):
    s = b.sim()
    d = b.tpad(s.port, f"upstream.sessions = {sessions}")
    b.wait_warm(d)
    base = 0x70B3D51000000000 + (0x100000000 if generate_app_key else 0)
    r, delta, rates = best_of(b, d, s, repeats, connections, depth, count, base, qr="png",
                              generate_app_key=generate_app_key)
    b.stop_daemon(d)
    s.stop()
    return r, delta, rates


def tpad_latency(b, delay_ms, count, sessions):
    s = b.sim()
    proxy = b.delay_proxy(s.port, delay_ms)
    d = b.tpad(proxy, f"upstream.sessions = {sessions}")
    b.wait_warm(d)
    b.loadgen(d, 1, 1, 3, 0x70B3D52000000000, qr="png")
    before = s.counters()
    r = b.loadgen(d, 1, 1, count, 0x70B3D52100000000, qr="png")
    delta = counter_delta(s.counters(), before)
    b.stop_daemon(d)
    s.stop()
    return r, delta


def baseline(b, delay_ms, count, start, resume=True):
    """baseline_activate.sh against tpa-sim, directly or through delay-proxy."""
    s = b.sim()
    port = b.delay_proxy(s.port, delay_ms) if delay_ms else s.port
    out = b.subdir("baseline")
    psk_file = os.path.join(out, "psk.hex")
    tpadtest.write_secret(psk_file, b.psk)
    before = s.counters()
    p = subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "baseline_activate.sh"),
                        "--upstream", f"127.0.0.1:{port}", "--identity", tpadtest.PSK_IDENTITY,
                        "--psk-file", psk_file, "--listen-port", str(tpadtest.free_port()),
                        "--count", str(count), "--start", f"{start:016X}", "--out", out]
                       + ([] if resume else ["--no-resume"]),
                       capture_output=True, text=True, timeout=count * 2 + 60)
    delta = counter_delta(s.counters(), before)
    s.stop()
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"baseline_activate.sh failed ({p.returncode}): {p.stderr}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r["ok"] != count:
        print(f"warning: baseline: {r['ok']} of {count} succeeded:\n{p.stderr[-2000:]}",
              file=sys.stderr)
    return r, delta


def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="meson build directory")
    ap.add_argument("--count", type=int, default=20000, help="activations per tpad run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--sessions", type=int, default=4, help="upstream.sessions for tpad")
    ap.add_argument("--repeats", type=int, default=3, help="tpad throughput runs (median)")
    ap.add_argument("--delay-ms", type=int, default=20, help="one-way delay of the proxy")
    ap.add_argument("--latency-count", type=int, default=100)
    ap.add_argument("--baseline-count", type=int, default=300)
    ap.add_argument("--baseline-latency-count", type=int, default=30)
    ap.add_argument("--workdir", help="where stores and logs go (default: the build dir)")
    ap.add_argument("--json", help="also write every result to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    rtt = 2 * a.delay_ms
    with Bench(a.build, a.workdir, a.keep) as b:
        machine = machine_line(b.dir)
        print(f"bench_activate: {machine}; store synchronous=FULL, WAL; "
              f"tpad upstream.sessions = {a.sessions}")
        tp, tp_sim, tp_rates = tpad_throughput(b, a.count, a.connections, a.depth, a.repeats,
                                               a.sessions)
        gk, gk_sim, gk_rates = tpad_throughput(b, a.count, a.connections, a.depth, a.repeats,
                                               a.sessions, generate_app_key=True)
        lat, lat_sim = tpad_latency(b, a.delay_ms, a.latency_count, a.sessions)
        bl, bl_sim = baseline(b, 0, a.baseline_count, 0x70B3D53000000000)
        bll, bll_sim = baseline(b, a.delay_ms, a.baseline_latency_count, 0x70B3D54000000000)
        bn, bn_sim = baseline(b, 0, a.baseline_count, 0x70B3D55000000000, resume=False)
        bnl, bnl_sim = baseline(b, a.delay_ms, a.baseline_latency_count, 0x70B3D56000000000,
                                resume=False)

    print(f"\ntpad runs ({a.count} activations per run, median of {a.repeats}, "
          f"{a.connections} connections x {a.depth} in flight, PNG label each):\n")
    print(table(["record", "activations/s", "all runs", "p50 ms", "p99 ms", "ok",
                 "tpa-sim imports", "duplicates", "new connections", "errors"], [
        ["tkmInfo (Secure Element)", f"{tp['rate']:.0f}", " ".join(map(str, tp_rates)),
         f"{tp['p50_ms']:.1f}", f"{tp['p99_ms']:.1f}", tp["ok"], tp_sim["imports"],
         tp_sim["duplicate_imports"], tp_sim["connections"], json.dumps(tp["errors"])],
        ["generateAppKey (sealed AppKey)", f"{gk['rate']:.0f}", " ".join(map(str, gk_rates)),
         f"{gk['p50_ms']:.1f}", f"{gk['p99_ms']:.1f}", gk["ok"], gk_sim["imports"],
         gk_sim["duplicate_imports"], gk_sim["connections"], json.dumps(gk["errors"])],
    ]))
    print(f"\nOne station, sequential, {rtt} ms RTT: tpad {lat['ok']} activations, median "
          f"{lat['p50_ms']:.1f} ms (min {lat['min_ms']:.1f}, p90 {lat['p90_ms']:.1f}, max "
          f"{lat['max_ms']:.1f}), tpa-sim handshakes during the run: {lat_sim['handshakes']}. "
          f"Baseline {bll['ok']} devices, median {bll['p50_ms']} ms (max {bll['max_ms']}), "
          f"tpa-sim handshakes {bll_sim['handshakes']} of which resumed {bll_sim['resumed']}.")
    print(f"Baseline on loopback: {bl['ok']} devices in {bl['seconds']} s, tpa-sim handshakes "
          f"{bl_sim['handshakes']} (resumed {bl_sim['resumed']}). With stunnel's "
          f"sessionResume = no: {bn['rate']}/s on loopback, median {bnl['p50_ms']} ms at "
          f"{rtt} ms RTT, handshakes {bn_sim['handshakes'] + bnl_sim['handshakes']} (resumed "
          f"{bn_sim['resumed'] + bnl_sim['resumed']}).\n")
    rate_ratio = tp["rate"] / bl["rate"] if bl["rate"] else float("inf")
    lat_ratio = float(bll["p50_ms"]) / lat["p50_ms"] if lat["p50_ms"] else float("inf")
    nrate_ratio = tp["rate"] / bn["rate"] if bn["rate"] else float("inf")
    nlat_ratio = float(bnl["p50_ms"]) / lat["p50_ms"] if lat["p50_ms"] else float("inf")
    print(table(["measure", "tpad", "baseline (stunnel4 + curl + qrencode)", "ratio",
                 "baseline, sessionResume = no", "ratio", "goal"], [
        ["devices/s, loopback, PNG label", f"{tp['rate']:.0f}", f"{bl['rate']:.1f}",
         f"{rate_ratio:.0f}x", f"{bn['rate']:.1f}", f"{nrate_ratio:.0f}x",
         f">= {GOAL_RATE}/s: {verdict(tp['rate'] >= GOAL_RATE)}"],
        [f"median ms per device, one station, {rtt} ms RTT", f"{lat['p50_ms']:.1f}",
         f"{float(bll['p50_ms']):.1f}", f"{lat_ratio:.1f}x faster", f"{float(bnl['p50_ms']):.1f}",
         f"{nlat_ratio:.1f}x faster",
         f"<= {GOAL_LATENCY_MS} ms: {verdict(lat['p50_ms'] <= GOAL_LATENCY_MS)}"],
    ]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "tpad_png": tp, "tpad_png_sim": tp_sim,
                       "tpad_png_rates": tp_rates, "tpad_generate": gk,
                       "tpad_generate_rates": gk_rates, "tpad_latency": lat,
                       "baseline_loopback": bl, "baseline_loopback_sim": bl_sim,
                       "baseline_latency": bll, "baseline_latency_sim": bll_sim,
                       "baseline_noresume_loopback": bn, "baseline_noresume_sim": bn_sim,
                       "baseline_noresume_latency": bnl, "baseline_noresume_latency_sim": bnl_sim},
                      f, indent=2)


if __name__ == "__main__":
    main()
