#!/usr/bin/env python3
"""bench_tpas: uplinks per second through tpas against a reference AS in Python.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_tpas.py BUILD [--count N] [--ref-count N] [--connections K]

In one run, on loopback, with the same prepared uplinks (JSON, each carrying its AppSKey
field, as with end-to-end encryption; 100 devices):
1. tpas: every uplink's Token and Time verified, AppSKey unwrapped (sealed session key
   looked up), FRMPayload decrypted, journaled (SQLite WAL, synchronous=FULL, group commit)
   before its 200, and delivered to one subscriber on the io.tpad.AS.Uplinks stream
   (an application reading the varlink stream on the apps socket and counting uplinks). The
   rate is uplinks over the time from the first POST to the subscriber's last uplink.
2. The reference (reference_as.py): Python http.server + cryptography + sqlite3, one
   uplink at a time, a commit per uplink, a subscriber polling the table.
Both are driven by tunnel-blast (C, keep-alive connections: K for tpas, one for the
single-threaded reference, which a second connection could only make wait). Prints a table and a JSON
line. Goal: tpas >= 10,000/s and >= 20x the reference.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "test", "integration"))
sys.path.insert(0, os.path.join(SRC, "test", "lrc-sim"))

from lrc_sim import LrcSim, encrypt_astk  # noqa: E402
from tpadtest import Client, free_port, wait_for, write_secret  # noqa: E402

KEY = "bec499c69e9c939e413b663961636c61"
GOAL_RATE = 10000
GOAL_RATIO = 20


def prepare(workdir, astk, count, devices=100):
    """count signed uplinks as raw HTTP requests in a file for tunnel-blast."""
    sim = LrcSim(os.path.join(workdir, "lrc.json"), KEY, as_url="http://127.0.0.1:1",
                 as_id="bench")
    devs = ["70B3D5%010X" % i for i in range(devices)]
    for d in devs:
        sim.add_device(d, astk)
    path = os.path.join(workdir, f"uplinks-{count}.bin")
    with open(path, "wb") as f:
        for i in range(count):
            d = devs[i % devices]
            target, body, ctype = sim.build_uplink(d, b"%08d 21.5C" % i, fcnt=i // devices)
            req = (f"POST /{target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            f.write(struct.pack(">I", len(req)) + req)
    return path


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blast(build, port, path, connections):
    p = subprocess.run([os.path.join(build, "test", "bench", "tunnel-blast"), str(port), path,
                        str(connections)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"tunnel-blast failed: {p.stderr}")
    return json.loads(p.stdout)


def run_tpas(build, workdir, count, connections):
    tpactl = os.path.join(build, "client", "tpactl")
    rsa = os.path.join(workdir, "rsa.pem")
    pub = subprocess.run([tpactl, "as", "keygen", "--out", rsa], capture_output=True,
                         text=True, check=True).stdout
    write_secret(os.path.join(workdir, "tk"), KEY)
    write_secret(os.path.join(workdir, "sk"), os.urandom(32).hex())
    port = free_port()
    conf = os.path.join(workdir, "tpas.conf")
    with open(conf, "w") as f:
        f.write(f"[tunnel]\nlisten = 127.0.0.1:{port}\nkey-file = {workdir}/tk\n"
                f"[apps]\nsocket = {workdir}/apps.sock\n[admin]\nsocket = {workdir}/admin.sock\n"
                f"[store]\npath = {workdir}/tpas.db\nkey-file = {workdir}/sk\n"
                f"[astk]\nrsa-key-file = {rsa}\n[limits]\nmax-output = 64M\n")
    log = open(os.path.join(workdir, "tpas.log"), "wb")
    proc = subprocess.Popen([os.path.join(build, "tpas", "tpas"), "--config", conf],
                            stdout=log, stderr=log)
    try:
        wait_for(lambda: os.path.exists(f"{workdir}/admin.sock"), 20, "tpas")
        astk = os.urandom(16)
        subprocess.run([tpactl, "--socket", f"{workdir}/admin.sock", "as", "import-astk",
                        encrypt_astk(pub, astk)], check=True, capture_output=True)
        path = prepare(workdir, astk, count)
        done = {}
        # The subscriber: an application on the apps socket following io.tpad.AS.Uplinks
        # (varlink, one NUL-terminated JSON message per uplink). Like the reference's
        # subscriber, which reads the rows' seq, it counts what it receives; it checks that
        # the last message is the last uplink.
        sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sub.connect(f"{workdir}/apps.sock")
        sub.sendall(json.dumps({"method": "io.tpad.AS.Uplinks", "parameters": {},
                                "more": True}).encode() + b"\0")

        def subscriber():
            n = 0
            tail = b""
            while n < count:
                chunk = sub.recv(1 << 20)
                if not chunk:
                    break
                n += chunk.count(b"\0")
                tail = (tail + chunk)[-4096:]
            done["at"] = time.monotonic()
            done["n"] = n
            last = tail.rstrip(b"\0").rsplit(b"\0", 1)[-1]
            done["last"] = json.loads(last)["parameters"]["uplink"]["seq"] if n else 0
        th = threading.Thread(target=subscriber)
        th.start()
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        res = blast(build, port, path, connections)
        th.join(300)
        cpu = cpu_seconds(proc.pid) - cpu0
        sub.close()
        with Client(f"{workdir}/admin.sock") as c:
            st = c.call("io.tpad.AS.Status")
        secs = max(done["at"], t0 + res["seconds"]) - t0
        return {"count": count, "ok": res["ok"], "delivered": done.get("n", 0),
                "last_seq": done.get("last", 0),
                "seconds": round(secs, 3), "rate": round(count / secs),
                "cpu_us_per_uplink": round(cpu * 1e6 / count, 1),
                "commits": st["journal"]["commits"], "batches": st["journal"]["batches"],
                "largest_batch": st["journal"]["largestBatch"],
                "accepted": st["tunnel"]["accepted"]}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_reference(workdir, count, connections, build):
    astk = os.urandom(16)
    d = os.path.join(workdir, "ref")
    os.makedirs(d)
    path = prepare(d, astk, count)
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "reference_as.py"), "--port",
                             str(port), "--key", KEY, "--astk", astk.hex(), "--db",
                             os.path.join(d, "ref.db"), "--expect", str(count)],
                            stdout=subprocess.PIPE, text=True)
    try:
        json.loads(proc.stdout.readline())  # listening
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        res = blast(build, port, path, connections)
        line = json.loads(proc.stdout.readline())
        cpu = cpu_seconds(proc.pid) - cpu0
        secs = max(line["at"], t0 + res["seconds"]) - t0
        return {"count": count, "ok": res["ok"], "delivered": line["delivered"],
                "seconds": round(secs, 3), "rate": round(count / secs),
                "cpu_us_per_uplink": round(cpu * 1e6 / count, 1)}
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--ref-count", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = tempfile.mkdtemp(prefix="bench-tpas-", dir=build)  # not tmpfs: fsync must count
    try:
        t = run_tpas(build, work, a.count, a.connections)
        # One connection: the reference serves one at a time (a keep-alive connection holds
        # its single thread until it closes).
        r = run_reference(work, a.ref_count, 1, build)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"| measure | tpas | reference (http.server + cryptography + sqlite3) | goal |")
    print(f"|---|---|---|---|")
    print(f"| uplinks/s verified, decrypted, journaled (fsync) and delivered | "
          f"**{t['rate']:,}** ({t['count']:,} in {t['seconds']} s, {t['commits']:,} commits) | "
          f"{r['rate']:,} ({r['count']:,} in {r['seconds']} s) | >= {GOAL_RATE:,}/s and >= "
          f"{GOAL_RATIO}x: ratio {t['rate'] / r['rate']:.1f}x |")
    print(json.dumps({"tpas": t, "reference": r}))
    ok = t["delivered"] == t["count"] and t["ok"] == t["count"] and r["ok"] == r["count"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
