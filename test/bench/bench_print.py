#!/usr/bin/env python3
"""bench_print: labels per second to a raw 9100 printer, and commit-to-last-byte of a live print.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_print.py [BUILD] [--devices N] [--live N] [--baseline N]

A fresh tpad imports N devices from tpa-sim on loopback, then `Admin.Print` of state
ISSUED sends them to a raw 9100 printer on loopback (a listener here that answers ~HS and
reads the job to its end) as one ZPL job; the rate is labels over the time of the call,
drawing included, median of 3 runs. Then --live single activations with print: each
reply's print.sendMs is the time from the store commit to the job's last byte (the ~HS
round trip included); median and p90. The baselines, in the same run, are what a station
script without tpad's printing would do, one process pair per label: a ZPL file made with
tpad's own layout (test-layout render) sent with socat to the same raw printer; and a PDF
made the same way submitted with ipptool's Print-Job to CUPS's ippeveprinter (Debian's
`lp` needs a running CUPS scheduler; ipptool sends the same Print-Job straight to the
printer, retrying while it answers busy). ippeveprinter runs as in test_print.py, "printing"
each job with /bin/true so its own processing time does not count. tpad's IPP path is
measured the same way: the 5,000 labels as one PDF, and single labels with Lookup.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import bench_upstream  # noqa: E402
from bench_upstream import Bench, machine_line  # noqa: E402

HS_READY = ("\x02030,0,0,0256,000,0,0,0,000,0,0,0\x03\r\n"
            "\x02000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n").encode()


class Sink:
    """A raw 9100 printer: answers ~HS, reads each job to EOF, counts labels."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.labels = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        buf = b""
        while b"~HS" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                # A job without a status question (the shell baseline).
                self.labels += buf.count(b"^XA")
                c.close()
                return
            buf += chunk
        c.sendall(HS_READY)
        n = buf.count(b"^XA")
        tail = buf[-3:]
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            n += (tail + chunk).count(b"^XA")
            tail = chunk[-3:]
        self.labels += n
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="meson build directory")
    ap.add_argument("--devices", type=int, default=5000, help="labels in the batch")
    ap.add_argument("--live", type=int, default=200, help="single live prints timed")
    ap.add_argument("--baseline", type=int, default=500, help="labels of the raw shell baseline")
    ap.add_argument("--ipp-baseline", type=int, default=200, help="labels of the IPP baseline")
    ap.add_argument("--workdir", help="where the store goes (default: the build dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    print("command: " + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    with Bench(a.build, a.workdir, a.keep) as b:
        print(f"machine: {machine_line(b.dir)}")
        sink = Sink()
        from test_print import IppPrinter
        ipp = IppPrinter(b.subdir("ipp"))
        s = b.sim()
        d = b.tpad(s.port, "upstream.sessions = 8\nprint.default = line1", start=False)
        with open(d.conf, "a") as f:
            f.write(f"[printer.line1]\nurl = socket://127.0.0.1:{sink.port}\n"
                    "status-interval = 0\n"
                    f"[printer.office]\nurl = {ipp.url()}\nstatus-interval = 0\n"
                    "timeout = 600s\n")
        d.start()
        b.wait_warm(d)
        src = os.path.join(b.subdir("csv"), "rows.csv")
        with open(src, "w") as f:
            f.write("devEUI,tkmInfo,serial\n")
            for i in range(a.devices):
                f.write(f"70B3D5{i:010X},{os.urandom(10).hex().upper()},SN-{i:07d}\n")
        subprocess.run([bench_upstream.tpadtest.TPACTL, "--socket", d.admin, "import", src,
                        "--concurrency", "64"], check=True, capture_output=True)
        rates = []
        for _ in range(3):
            before = sink.labels
            with d.admin_client(timeout=600) as c:
                t0 = time.monotonic()
                r = c.call("io.tpad.Admin.Print", {"state": "ISSUED"})
                dt = time.monotonic() - t0
            assert r["labels"] == a.devices, r
            time.sleep(0.2)
            assert sink.labels - before == a.devices, (sink.labels, before)
            rates.append(a.devices / dt)
        print(f"batch of {a.devices} labels to raw 9100, one ZPL job: "
              f"{statistics.median(rates):,.0f} labels/s (runs: "
              + ", ".join(f"{x:,.0f}" for x in rates) + ")")
        sends = []
        with d.station_client() as c:
            for i in range(a.live):
                r = c.call("io.tpad.Station.Activate",
                           {"devEUI": f"70B3D6{i:010X}", "generateAppKey": True,
                            "print": {}})
                sends.append(r["print"]["sendMs"])
        sends.sort()
        print(f"live activation, store commit to the job's last byte: median "
              f"{statistics.median(sends):.2f} ms, p90 {sends[int(len(sends) * 0.9)]:.2f} ms "
              f"over {a.live}")
        with d.admin_client(timeout=900) as c:
            t0 = time.monotonic()
            r = c.call("io.tpad.Admin.Print", {"state": "ISSUED", "printer": "office"})
            dt = time.monotonic() - t0
        n = r["labels"]
        print(f"batch of {n} labels to ippeveprinter, one PDF of a page per label: "
              f"{n / dt:,.0f} labels/s ({dt:.1f} s, {os.path.getsize(ipp.files()[-1]) / n:,.0f} "
              f"bytes of PDF per label)")
        sends = []
        with d.station_client() as c:
            for i in range(min(a.live, 50)):
                r = c.call("io.tpad.Station.Lookup",
                           {"devEUI": f"70B3D6{i:010X}", "print": {"printer": "office"}})
                sends.append(r["print"]["sendMs"])
        sends.sort()
        print(f"one label to ippeveprinter (Lookup with print, PDF drawn, status asked, "
              f"Print-Job answered): median {statistics.median(sends):.2f} ms, p90 "
              f"{sends[int(len(sends) * 0.9)]:.2f} ms over {len(sends)}")
        ipp.stop()
        # The baselines need no tpad; stop it now (the harness reads its notify socket
        # only while waiting for something, and STATUS= keeps coming every 5 s).
        b.stop_daemon(d)
        s.stop()
        baseline(a, b, sink)


def run_script(path):
    t0 = time.monotonic()
    p = subprocess.run(["sh", path], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the baseline failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return time.monotonic() - t0


def baseline(a, b, sink):
    """Shell loops, one label at a time: ZPL over socat to the same raw printer; a PDF
    and an ipptool Print-Job to ippeveprinter."""
    from test_print import IppPrinter
    work = b.subdir("baseline")
    layout = os.path.join(os.path.abspath(a.build), "test", "test-layout")
    text = 'LW:D0:70B3D57ED0000001:70B3D5$(printf %010X $i):00000000:O0123456789ABCDEF:C0000'
    raw = os.path.join(work, "raw.sh")
    with open(raw, "w") as f:
        f.write(f"""set -e
i=0
while [ $i -lt {a.baseline} ]; do
	{layout} render zpl "{text}" {work}/l.zpl
	socat -u FILE:{work}/l.zpl TCP:127.0.0.1:{sink.port}
	i=$((i + 1))
done
""")
    before = sink.labels
    dt = run_script(raw)
    time.sleep(0.2)
    assert sink.labels - before == a.baseline, (sink.labels - before, a.baseline)
    print(f"baseline, a ZPL file and a socat per label to the raw printer: "
          f"{a.baseline / dt:,.1f} labels/s ({dt / a.baseline * 1000:.1f} ms per label)")
    if not a.ipp_baseline:
        return
    ipp = IppPrinter(work)
    try:
        script = os.path.join(work, "ipp.sh")
        with open(script, "w") as f:
            f.write(f"""set -e
i=0
while [ $i -lt {a.ipp_baseline} ]; do
	{layout} render pdf "{text}" {work}/l.pdf
	until ipptool -f {work}/l.pdf -q {ipp.url()} print-job.test; do sleep 0.05; done
	i=$((i + 1))
done
""")
        dt = run_script(script)
        print(f"baseline, a PDF and an ipptool Print-Job per label to ippeveprinter: "
              f"{a.ipp_baseline / dt:,.1f} labels/s ({dt / a.ipp_baseline * 1000:.1f} ms "
              f"per label)")
    finally:
        ipp.stop()


if __name__ == "__main__":
    main()
