#!/usr/bin/env python3
"""bench_tpas: uplinks per second through tpas against a reference AS in Python.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_tpas.py BUILD [--count N] [--ref-count N] [--connections K]
                                           [--runs R] [--radio short|full] [--keep]

Each run, on loopback, with prepared uplinks (JSON, each carrying its AppSKey field, as with
end-to-end encryption; 100 devices; --radio full adds the other fields the LRC sends: base
stations, customer data, radio settings, 1.3 KB bodies instead of 0.4 KB), all posted by
the same client, tunnel-blast (C, one epoll thread, K keep-alive connections, each sending
its next request once the last is answered):
1. tpas: every uplink's Token and Time verified, AppSKey unwrapped (sealed session key
   looked up), FRMPayload decrypted, journaled (SQLite WAL, synchronous=FULL, group commit
   on the writer thread) before its 200, and delivered to one subscriber on the
   io.tpad.AS.Uplinks stream (an application reading the varlink stream on the apps socket
   and counting uplinks; it checks that the last one has the last seq). The rate is
   uplinks over the time from the first POST to the subscriber's last uplink.
2. The reference (reference_as.py), twice: Python http.server + cryptography + sqlite3, one
   uplink at a time, a commit per uplink, a subscriber thread polling the table; once as
   HTTPServer on one connection (it serves one connection at a time), once as
   ThreadingHTTPServer on K connections. The better of the two counts.
3. tunnel-null (tunnel_null.c): a C server that answers every request 200 and does nothing
   else, with the same client and uplinks: the most this machine carries with this client,
   so the most any server's ratio to the reference can be here.
CPU per uplink is the server process's user + system time over the run (tpas's also by
thread: the event loop, and the journal's writer thread, sqlwriter; and the subscriber's,
which shares the machine). Prints a table,
best/median/last/worst over the runs and a JSON line. Goal: tpas >= 10,000/s and >= 20x the
reference.
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

from lrc_sim import FULL_RADIO, LrcSim, encrypt_astk  # noqa: E402
from tpadtest import Client, free_port, wait_for, write_secret  # noqa: E402

KEY = "bec499c69e9c939e413b663961636c61"
GOAL_RATE = 10000
GOAL_RATIO = 20


BODY_SIZE = {"short": "0.4 KB", "full": "1.3 KB"}


def prepare(workdir, astk, count, devices=100, radio="short"):
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
            target, body, ctype = sim.build_uplink(d, b"%08d 21.5C" % i, fcnt=i // devices,
                                                   extra=FULL_RADIO if radio == "full" else None)
            req = (f"POST /{target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            f.write(struct.pack(">I", len(req)) + req)
    return path


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid):
    """{thread name: user + system CPU seconds} of each of a process's threads."""
    ret = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, fields = f.read().rsplit(")", 1)
        except FileNotFoundError:
            continue
        name = head.split("(", 1)[1] if tid != str(pid) else "loop"
        ret[name] = ret.get(name, 0) + (int(fields.split()[11]) + int(fields.split()[12])) \
            / os.sysconf("SC_CLK_TCK")
    return ret


def blast(build, port, path, connections):
    p = subprocess.run([os.path.join(build, "test", "bench", "tunnel-blast"), str(port), path,
                        str(connections)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"tunnel-blast failed: {p.stderr}")
    return json.loads(p.stdout)


def start_tpas(build, workdir, extra=""):
    """A tpas on loopback with its store in workdir (not tpas's --verbose: no debug log per
    uplink) and one ASTK imported: (process, its log file, tunnel port, the ASTK). extra:
    more of its configuration."""
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
                f"[astk]\nrsa-key-file = {rsa}\n[limits]\nmax-output = 64M\n" + extra)
    log = open(os.path.join(workdir, "tpas.log"), "wb")
    proc = subprocess.Popen([os.path.join(build, "tpas", "tpas"), "--config", conf],
                            stdout=log, stderr=log)
    try:
        wait_for(lambda: os.path.exists(f"{workdir}/admin.sock"), 20, "tpas")
        astk = os.urandom(16)
        subprocess.run([tpactl, "--socket", f"{workdir}/admin.sock", "as", "import-astk",
                        encrypt_astk(pub, astk)], check=True, capture_output=True)
    except BaseException:
        proc.terminate()
        proc.wait(30)
        log.close()
        raise
    return proc, log, port, astk


def run_tpas(build, workdir, count, connections, radio):
    proc, log, port, astk = start_tpas(build, workdir)
    try:
        path = prepare(workdir, astk, count, radio=radio)
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
            # Into one buffer, kept: recv(1 << 20) made (and the kernel mapped) a new MiB
            # each call, 1.0-1.2 us an uplink against 0.4 this way.
            cpu_start = time.thread_time()
            buf = bytearray(1 << 20)
            n = 0
            tail = b""
            while n < count:
                got = sub.recv_into(buf)
                if not got:
                    break
                n += buf.count(b"\0", 0, got)
                tail = (tail + buf[max(0, got - 4096):got])[-4096:]
            done["at"] = time.monotonic()
            done["cpu"] = time.thread_time() - cpu_start
            done["n"] = n
            last = tail.rstrip(b"\0").rsplit(b"\0", 1)[-1]
            done["last"] = json.loads(last)["parameters"]["uplink"]["seq"] if n else 0
        th = threading.Thread(target=subscriber)
        th.start()
        cpu0 = cpu_seconds(proc.pid)
        threads0 = thread_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        res = blast(build, port, path, connections)
        th.join(300)
        cpu = cpu_seconds(proc.pid) - cpu0
        threads = {k: round((v - threads0.get(k, 0)) * 1e6 / count, 1)
                   for k, v in thread_cpu_seconds(proc.pid).items()}
        sub.close()
        with Client(f"{workdir}/admin.sock") as c:
            st = c.call("io.tpad.AS.Status")
        secs = max(done["at"], res["start"] + res["seconds"]) - res["start"]
        return {"count": count, "ok": res["ok"], "delivered": done.get("n", 0),
                "load_seconds": round(res["start"] - t0, 3),
                "last_seq": done.get("last", 0),
                "seconds": round(secs, 3), "rate": round(count / secs),
                "cpu_us_per_uplink": round(cpu * 1e6 / count, 1),
                "cpu_us_per_uplink_by_thread": threads,
                "subscriber_cpu_us_per_uplink": round(done.get("cpu", 0) * 1e6 / count, 1),
                "commits": st["journal"]["commits"], "batches": st["journal"]["batches"],
                "largest_batch": st["journal"]["largestBatch"],
                "accepted": st["tunnel"]["accepted"]}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_reference(workdir, count, connections, build, threads, radio):
    astk = os.urandom(16)
    d = tempfile.mkdtemp(prefix="ref-", dir=workdir)
    path = prepare(d, astk, count, radio=radio)
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "reference_as.py"), "--port",
                             str(port), "--key", KEY, "--astk", astk.hex(), "--db",
                             os.path.join(d, "ref.db"), "--expect", str(count)] +
                            (["--threads"] if threads else []),
                            stdout=subprocess.PIPE, text=True)
    try:
        json.loads(proc.stdout.readline())  # listening
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        res = blast(build, port, path, connections)
        line = json.loads(proc.stdout.readline())
        cpu = cpu_seconds(proc.pid) - cpu0
        secs = max(line["at"], res["start"] + res["seconds"]) - res["start"]
        return {"count": count, "connections": connections, "threads": threads,
                "load_seconds": round(res["start"] - t0, 3),
                "ok": res["ok"], "delivered": line["delivered"],
                "seconds": round(secs, 3), "rate": round(count / secs),
                "cpu_us_per_uplink": round(cpu * 1e6 / count, 1)}
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def run_null(build, workdir, count, connections, radio):
    """tunnel-null (answers 200, does nothing else) with the same client and uplinks."""
    path = prepare(workdir, os.urandom(16), count, radio=radio)
    port = free_port()
    proc = subprocess.Popen([os.path.join(build, "test", "bench", "tunnel-null"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # listening
        cpu0 = cpu_seconds(proc.pid)
        res = blast(build, port, path, connections)
        cpu = cpu_seconds(proc.pid) - cpu0
        return {"count": count, "ok": res["ok"], "seconds": round(res["seconds"], 3),
                "rate": round(count / res["seconds"]),
                "cpu_us_per_uplink": round(cpu * 1e6 / count, 1)}
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def median(xs):
    """The middle of sorted xs (the mean of the two middle ones when even)."""
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def one_run(build, work, a):
    d = tempfile.mkdtemp(prefix="run-", dir=work)
    t = run_tpas(build, d, a.count, a.connections, a.radio)
    n = run_null(build, d, a.count, a.connections, a.radio)
    # The reference twice, the better one counts: http.server on one keep-alive connection
    # (it serves one connection at a time: more would only queue behind the first), and
    # ThreadingHTTPServer (a thread per connection) on as many connections as tpas had.
    r1 = run_reference(d, a.ref_count, 1, build, False, a.radio)
    rk = run_reference(d, a.ref_count, a.connections, build, True, a.radio)
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)
    best = max(r1["rate"], rk["rate"])
    return {"tpas": t, "reference": r1, "reference_threads": rk, "null": n,
            "ratio": round(t["rate"] / best, 1), "null_ratio": round(n["rate"] / best, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--ref-count", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--radio", choices=("short", "full"), default="short",
                    help="the uplinks' other fields: a few (0.4 KB bodies) or as the LRC "
                    "sends them (1.3 KB)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = tempfile.mkdtemp(prefix="bench-tpas-", dir=build)  # not tmpfs: fsync must count
    fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", work], capture_output=True,
                        text=True).stdout.strip() or "?"
    runs = []
    try:
        for _ in range(a.runs):
            runs.append(one_run(build, work, a))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
          f"store on {fs}, load average {os.getloadavg()[0]:.2f}")
    print(f"tpas: {a.count:,} uplinks on {a.connections} connections; reference: "
          f"{a.ref_count:,} uplinks, http.server on 1 connection and ThreadingHTTPServer on "
          f"{a.connections}; bodies of {BODY_SIZE[a.radio]}")
    print("| run | tpas uplinks/s | tpas CPU us/uplink | commits (writer batches) | "
          "reference uplinks/s (1 conn / threads) | reference CPU us/uplink | ratio | "
          "tunnel-null requests/s (CPU us) | its ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        t, r1, rk, n = r["tpas"], r["reference"], r["reference_threads"], r["null"]
        print(f"| {i} | **{t['rate']:,}** | {t['cpu_us_per_uplink']} | {t['commits']:,} "
              f"({t['batches']:,}) | {r1['rate']:,} / {rk['rate']:,} | "
              f"{r1['cpu_us_per_uplink']} / {rk['cpu_us_per_uplink']} | {r['ratio']}x | "
              f"{n['rate']:,} ({n['cpu_us_per_uplink']}) | {r['null_ratio']}x |")
    for i, r in enumerate(runs, 1):
        split = ", ".join(f"{k} {v} us" for k, v in
                          sorted(r["tpas"]["cpu_us_per_uplink_by_thread"].items()))
        print(f"run {i}: tpas CPU per uplink by thread: {split}; the subscriber (Python) "
              f"{r['tpas']['subscriber_cpu_us_per_uplink']} us")
    if len(runs) > 1:
        rates = sorted(r["tpas"]["rate"] for r in runs)
        ratios = sorted(r["ratio"] for r in runs)
        print(f"tpas uplinks/s best {rates[-1]:,}, median {round(median(rates)):,}, last "
              f"{runs[-1]['tpas']['rate']:,}, worst {rates[0]:,}; ratio best {ratios[-1]}x, "
              f"median {round(median(ratios), 1)}x, last {runs[-1]['ratio']}x, worst {ratios[0]}x")
    print(f"goal: >= {GOAL_RATE:,}/s and >= {GOAL_RATIO}x the better reference (tunnel-null: "
          "a server that only answers 200, the ceiling of this machine with this client)")
    print(json.dumps(runs))
    ok = all(r["tpas"]["delivered"] == r["tpas"]["count"] and
             r["tpas"]["ok"] == r["tpas"]["count"] and
             r["tpas"]["last_seq"] == r["tpas"]["count"] and
             r["null"]["ok"] == r["null"]["count"] and
             r["reference"]["ok"] == r["reference"]["count"] and
             r["reference_threads"]["ok"] == r["reference_threads"]["count"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
