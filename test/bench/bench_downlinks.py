#!/usr/bin/env python3
"""bench_downlinks: what downlinks cost tpas's uplinks, and how long they take under load.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_downlinks.py BUILD [--count N] [--gap S] [--runs R]

Each run, on loopback: tpas with an LRC (test/lrc-sim, which takes the downlinks and checks
their Token, payload and FCntDn), the uplinks of bench_tpas.py posted by tunnel-blast on 64
connections, twice: alone, then with an application sending one SendDownlink after
another (S seconds apart) on the apps socket for as long as the uplinks last. Prints the
uplinks per second of both, the downlinks sent and their latency (p50, p90, the most).
A downlink's FCntDn is committed by the journal's writer thread, with the uplinks queued
with it, before it is sent: what that costs the uplinks, and what waiting for a batch's
commit costs the downlink, shows here.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "test", "integration"))
sys.path.insert(0, os.path.join(SRC, "test", "lrc-sim"))

import bench_tpas as bt  # noqa: E402
from lrc_sim import LrcSim  # noqa: E402
from tpadtest import Client  # noqa: E402

DEV = "0024AEB3C02BE1C4"


def run(build, work, count, gap, downlinks):
    d = tempfile.mkdtemp(prefix="run-", dir=work)
    lrc = LrcSim(os.path.join(d, "lrc.json"), bt.KEY, as_id="bench")
    lrc_port = lrc.start()
    try:
        proc, log, port, astk = bt.start_tpas(
            build, d, f"[tunnel]\nas-id = bench\n[lrc]\nurl = http://127.0.0.1:{lrc_port}\n")
    except BaseException:
        lrc.stop()
        raise
    try:
        lrc.as_url = f"http://127.0.0.1:{port}"
        lrc.add_device(DEV, astk)
        status, _ = lrc.uplink(DEV, b"hello")
        assert status == 200, status
        path = bt.prepare(d, astk, count)
        res = {}

        def flood():
            t0 = time.monotonic()
            res["blast"] = bt.blast(build, port, path, 64)
            res["seconds"] = time.monotonic() - t0
        th = threading.Thread(target=flood)
        th.start()
        lat = []
        if downlinks:
            time.sleep(0.3)
            with Client(f"{d}/apps.sock") as c:
                while th.is_alive():
                    t0 = time.monotonic()
                    c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2,
                                                       "payload": "01"})
                    lat.append(time.monotonic() - t0)
                    time.sleep(gap)
        th.join(600)
        assert res["blast"]["ok"] == count, res
        assert lrc.state["violations"] == [], lrc.state["violations"]
        lat.sort()
        return {"rate": round(count / res["seconds"]), "downlinks": len(lat),
                "per_second": round(len(lat) / res["seconds"]),
                "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
                "p90_ms": round(lat[int(len(lat) * 0.9)] * 1000, 1) if lat else None,
                "max_ms": round(lat[-1] * 1000, 1) if lat else None}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        lrc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--count", type=int, default=150000)
    ap.add_argument("--gap", type=float, default=0.002,
                    help="seconds between one downlink's answer and the next")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = tempfile.mkdtemp(prefix="bench-downlinks-", dir=build)
    print(f"{a.count:,} uplinks on 64 connections; downlinks one after another, {a.gap} s "
          "apart")
    print("| run | uplinks/s alone | uplinks/s with downlinks | downlinks/s | SendDownlink "
          "p50 / p90 / most |")
    print("|---|---|---|---|---|")
    try:
        for i in range(a.runs):
            alone = run(build, work, a.count, a.gap, False)
            mixed = run(build, work, a.count, a.gap, True)
            print(f"| {i + 1} | {alone['rate']:,} | {mixed['rate']:,} | {mixed['per_second']} | "
                  f"{mixed['p50_ms']} / {mixed['p90_ms']} / {mixed['max_ms']} ms |")
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
