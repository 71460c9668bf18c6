#!/usr/bin/env python3
"""bench_upstream: requests per second through tpad's TLS-PSK pool, and one request's latency.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_upstream.py BUILD [--count N] [--keep]

1. Throughput: activations without a QR image (the upstream path plus the store) from the
   C load generator against tpa-sim on loopback, for upstream.sessions = 1, 4 and 16,
   with tpa-sim's own counters (requests, connections, handshakes) for the same interval.
2. Latency with a 40 ms round trip (delay-proxy --delay-ms 20 between tpad and tpa-sim):
   a warm pool (kept-alive session, sequential calls from one station) and a cold start
   (the first call right after tpad is ready with upstream.sessions = 1, which has to wait
   for the TCP connect and the full TLS handshake).

The module also holds the helpers bench_activate.py uses.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC_ROOT, "test", "integration"))

import tpadtest  # noqa: E402


def fs_of(path):
    """The filesystem type and device that hold path, e.g. 'ext4 on /dev/vda'."""
    p = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", path],
                       capture_output=True, text=True)
    parts = p.stdout.split()
    return f"{parts[0]} on {parts[1]}" if len(parts) >= 2 else "unknown"


class Bench:
    """Starts tpa-sim, delay-proxy and tpad from one build directory and stops them all."""

    def __init__(self, build, workdir=None, keep=False):
        self.build = os.path.abspath(build)
        for name, rel in (("TPAD", "daemon/tpad"), ("TPACTL", "client/tpactl"),
                          ("TPA_SIM", "test/tpa-sim/tpa-sim"),
                          ("DELAY_PROXY", "test/tpa-sim/delay-proxy")):
            path = os.path.join(self.build, rel)
            if not os.access(path, os.X_OK):
                sys.exit(f"{path} is missing: build first (ninja -C {build})")
            setattr(tpadtest, name, path)
        self.loadgen_path = os.path.join(self.build, "test/bench/loadgen")
        if not os.access(self.loadgen_path, os.X_OK):
            sys.exit(f"{self.loadgen_path} is missing: build first (ninja -C {build})")
        base = os.path.abspath(workdir) if workdir else self.build
        self.dir = tempfile.mkdtemp(prefix="bench-", dir=base)
        self.keep = keep
        self.psk = secrets.token_hex(16)
        self.sims = []
        self.daemons = []
        self.procs = []
        self.n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def subdir(self, name):
        self.n += 1
        d = os.path.join(self.dir, f"{name}{self.n}")
        os.makedirs(d)
        return d

    def sim(self, extra=()):
        """tpa-sim over TLS-PSK on loopback, registry in memory only."""
        s = tpadtest.Sim(self.subdir("sim"), self.psk, extra=extra, registry=False)
        self.sims.append(s)
        return s.start()

    def delay_proxy(self, to_port, delay_ms):
        """delay-proxy in front of to_port; returns its port."""
        d = self.subdir("proxy")
        port_file = os.path.join(d, "port")
        log = open(os.path.join(d, "proxy.log"), "ab")
        p = subprocess.Popen([tpadtest.DELAY_PROXY, "--listen", "127.0.0.1:0", "--port-file",
                              port_file, "--to", f"127.0.0.1:{to_port}", "--delay-ms",
                              str(delay_ms)], stdout=log, stderr=log)
        log.close()
        self.procs.append(p)
        return tpadtest.read_port_file(port_file)

    def tpad(self, port, conf_extra="", start=True):
        """tpad towards https://127.0.0.1:port with a fresh store in the work directory."""
        d = tpadtest.Daemon(self.subdir("tpad"), upstream_url=f"https://127.0.0.1:{port}",
                            psk_hex=self.psk, conf_extra=conf_extra)
        self.daemons.append(d)
        return d.start() if start else d

    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")

    def wait_warm(self, d, timeout=20):
        """Wait until every upstream session of d is ready."""
        def ready():
            up = self.status(d)["upstream"]
            return all(s["state"] == "ready" for s in up["sessions"])
        tpadtest.wait_for(ready, timeout, "warm upstream sessions")

    def loadgen(self, d, connections, depth, count, start, qr="none", generate_app_key=False,
                timeout=600):
        """Run the load generator against d's station socket; returns its JSON result."""
        args = [self.loadgen_path, "--socket", d.station, "--connections", str(connections),
                "--depth", str(depth), "--count", str(count), "--start", str(start),
                "--qr", qr, "--timeout", str(timeout)]
        if generate_app_key:
            args.append("--generate-app-key")
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 30)
        if not p.stdout.strip():
            raise RuntimeError(f"loadgen failed ({p.returncode}): {p.stderr}")
        r = json.loads(p.stdout)
        if r["ok"] != count:
            print(f"warning: loadgen: {r['ok']} of {count} succeeded; errors {r['errors']}",
                  file=sys.stderr)
        return r

    def stop_daemon(self, d):
        d.stop()
        self.daemons.remove(d)

    def close(self):
        for d in self.daemons:
            if d.proc:
                try:
                    d.stop()
                except AssertionError as e:
                    print(f"warning: {e}", file=sys.stderr)
        for s in self.sims:
            s.stop()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.keep:
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def counter_delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def table(headers, rows):
    """A Markdown table as a string."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def machine_line(path):
    return (f"nproc {os.cpu_count()}, {time.strftime('%Y-%m-%d %H:%M')}, store on "
            f"{fs_of(path)}")


def best_of(b, d, sim, repeats, connections, depth, count, base, **kw):
    """Run the load repeats times after a short warm-up; return the median run and all rates."""
    b.loadgen(d, connections, depth, min(1000, count), base, **kw)
    runs = []
    for k in range(repeats):
        before = sim.counters()
        r = b.loadgen(d, connections, depth, count, base + (k + 1) * 0x1000000, **kw)
        runs.append((r, counter_delta(sim.counters(), before)))
    runs.sort(key=lambda x: x[0]["rate"])
    r, delta = runs[len(runs) // 2]
    return r, delta, [round(x[0]["rate"]) for x in runs]


def throughput(b, sessions_list, count, connections, depth, repeats):
    """Activations per second without QR for each pool size, with tpa-sim's counters."""
    rows = []
    results = []
    for i, sessions in enumerate(sessions_list):
        s = b.sim()
        d = b.tpad(s.port, f"upstream.sessions = {sessions}")
        b.wait_warm(d)
        base = 0x70B3D50000000000 + (i + 1) * 0x100000000
        r, delta, rates = best_of(b, d, s, repeats, connections, depth, count, base)
        b.stop_daemon(d)
        s.stop()
        results.append({"sessions": sessions, "loadgen": r, "sim": delta, "rates": rates})
        rows.append([sessions, f"{r['rate']:.0f}", " ".join(map(str, rates)),
                     f"{delta['requests'] / r['seconds']:.0f}", f"{r['p50_ms']:.2f}",
                     f"{r['p99_ms']:.2f}", delta["requests"], delta["imports"],
                     delta["duplicate_imports"], delta["connections"], delta["handshakes"],
                     json.dumps(r["errors"])])
    print(f"\nThroughput through the pool, loopback, no QR image ({count} activations per run, "
          f"median of {repeats} runs, {connections} station connections x {depth} calls in "
          "flight; tpa-sim columns are that run's counters):\n")
    print(table(["sessions", "activations/s", "all runs", "tpa-sim requests/s", "p50 ms",
                 "p99 ms", "sim requests", "sim imports", "sim duplicates",
                 "sim new connections", "sim handshakes", "errors"], rows))
    return results


def warm_latency(b, delay_ms, count, sessions=4):
    """Sequential activations from one station through a warm pool at 2*delay_ms RTT."""
    s = b.sim()
    proxy = b.delay_proxy(s.port, delay_ms)
    d = b.tpad(proxy, f"upstream.sessions = {sessions}")
    b.wait_warm(d)
    suite = b.status(d)["upstream"]["sessions"][0]["ciphersuite"]
    before = s.counters()
    r = b.loadgen(d, 1, 1, count, 0x70B3D5A000000000)
    delta = counter_delta(s.counters(), before)
    b.stop_daemon(d)
    s.stop()
    return r, delta, suite


def cold_latency(b, delay_ms, repeats):
    """The first activation after tpad is ready with one session: connect + handshake + request."""
    s = b.sim()
    proxy = b.delay_proxy(s.port, delay_ms)
    first, spawn, handshakes = [], [], []
    for i in range(repeats):
        before = s.counters()
        d = b.tpad(proxy, "upstream.sessions = 1", start=False)
        t_spawn = time.monotonic()
        d.start()
        with d.station_client() as c:
            t_send = time.monotonic()
            c.call("io.tpad.Station.Activate",
                   {"devEUI": f"70B3D5C0{i:08X}", "tkmInfo": f"311170B3D5C0{i:08X}",
                    "qr": {"format": "none"}})
            t_reply = time.monotonic()
        first.append((t_reply - t_send) * 1000)
        spawn.append((t_reply - t_spawn) * 1000)
        handshakes.append(counter_delta(s.counters(), before)["handshakes"])
        b.stop_daemon(d)
    s.stop()
    return first, spawn, handshakes


def latency(b, delay_ms, count, repeats):
    rtt = 2 * delay_ms
    w, wdelta, suite = warm_latency(b, delay_ms, count)
    first, spawn, hs = cold_latency(b, delay_ms, repeats)
    print(f"\nOne request's latency at {rtt} ms RTT (delay-proxy --delay-ms {delay_ms}), "
          "no QR image:\n")
    print(table(["case", "samples", "median ms", "min ms", "max ms", "note"], [
        ["warm pool (kept-alive session)", w["ok"], f"{w['p50_ms']:.1f}", f"{w['min_ms']:.1f}",
         f"{w['max_ms']:.1f}", f"p90 {w['p90_ms']:.1f} ms; tpa-sim handshakes during the run: "
         f"{wdelta['handshakes']}"],
        ["cold start (first call after READY=1, sessions = 1)", len(first),
         f"{statistics.median(first):.1f}", f"{min(first):.1f}", f"{max(first):.1f}",
         f"tpad spawn to reply: median {statistics.median(spawn):.1f} ms; "
         f"tpa-sim handshakes per start: {hs}"],
    ]))
    print(f"\nCiphersuite of the pool's sessions: {suite}.")
    print(f"A cold request pays the TCP connect and the TLS handshake ({rtt} ms per TLS round "
          "trip; the proxy does not delay the kernel's TCP handshake) before its own round "
          "trip; the warm pool pays one round trip.")
    return {"warm": w, "warm_sim": wdelta, "cold_first_ms": first, "cold_spawn_ms": spawn,
            "cold_handshakes": hs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="meson build directory")
    ap.add_argument("--count", type=int, default=20000, help="activations per throughput run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="throughput runs per pool size")
    ap.add_argument("--sessions", default="1,4,16", help="pool sizes to measure")
    ap.add_argument("--delay-ms", type=int, default=20, help="one-way delay of the proxy")
    ap.add_argument("--latency-count", type=int, default=50)
    ap.add_argument("--cold-repeats", type=int, default=5)
    ap.add_argument("--workdir", help="where stores and logs go (default: the build dir)")
    ap.add_argument("--json", help="also write every result to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    with Bench(a.build, a.workdir, a.keep) as b:
        print(f"bench_upstream: {machine_line(b.dir)}")
        out = {"machine": machine_line(b.dir)}
        out["throughput"] = throughput(b, [int(x) for x in a.sessions.split(",")], a.count,
                                       a.connections, a.depth, a.repeats)
        out["latency"] = latency(b, a.delay_ms, a.latency_count, a.cold_repeats)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
