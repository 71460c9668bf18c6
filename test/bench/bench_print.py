#!/usr/bin/env python3
"""bench_print: tpad's label printing side by side with `lp` of a PDF made per label.

Run on demand (never part of the timed suite), as root (the baseline's cupsd):

    python3 test/bench/bench_print.py [BUILD] [--devices N] [--live N] [--baseline N]
                                      [--ipp-baseline N] [--single N]

Needs, besides the build: CUPS's scheduler and clients (Debian `cups-daemon`,
`cups-client`), `ippeveprinter` (`cups-ipp-utils`), `dbus-daemon` and `socat`; the bench
says what to install when one is missing.

The printers, started here on 127.0.0.1: a raw 9100 printer (a listener that answers ~HS
and reads each job to its end, noting when its last byte came) and CUPS's ippeveprinter
(IPP Everywhere, "printing" each job with a command that notes the time the job was
whole, so its own processing does not count).

tpad: a fresh tpad imports N devices from tpa-sim on loopback, then `Admin.Print` of state
ISSUED sends them to the raw printer as one ZPL job (labels over the time from the call
to the job's last byte at the printer, drawing included, median of 3 runs). Then --live
single activations with print: each reply's print.sendMs is the time from the store
commit to the job's last byte (the ~HS round trip included). Then --single `Lookup` calls
with print, timed from the call to the last byte at the printer, as a station sees one
label. The same for the IPP printer: the N labels as one PDF, then single labels.

The baseline, in the same run, is what a line would do without tpad's printing: a shell
script that, per label, makes a PDF of the label (`test-layout render pdf`, tpad's own
layout, so the same label) and submits it with `lp -h 127.0.0.1:PORT -d QUEUE FILE.pdf`
to a throw-away CUPS scheduler started here (cupsd in the foreground, its own
configuration, spool and logs in the work directory, listening on 127.0.0.1 only),
whose raw queues point at the same two printers (socket:// and ipp://). A batch is timed
from the script's start to the last job's last byte at the printer; one label likewise,
the queue idle before each. (Also: a ZPL file per label sent with socat, no CUPS.)
"""

import argparse
import os
import shutil
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
from tpadtest import free_port, wait_for  # noqa: E402

HS_READY = ("\x02030,0,0,0256,000,0,0,0,000,0,0,0\x03\r\n"
            "\x02000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n").encode()

# Debian packages of the tools the bench runs, for the message when one is missing.
TOOLS = {"cupsd": "cups-daemon", "lp": "cups-client", "lpadmin": "cups-client",
         "ippeveprinter": "cups-ipp-utils", "dbus-daemon": "dbus", "socat": "socat"}


def check_tools():
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        sys.exit("bench_print: missing tools; install them with\n"
                 f"    apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        sys.exit("bench_print: run as root: the lp baseline starts its own cupsd")


class Sink:
    """A raw 9100 printer: answers ~HS, reads each job to EOF, notes when it ended."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.labels = 0
        self.ends = []  # time.monotonic() of each job's last byte, in order
        self.lock = threading.Lock()
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
        n = 0
        while b"~HS" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                # A job without a status question (CUPS's socket backend, socat).
                self.done(c, buf.count(b"^XA"))
                return
            buf += chunk
            if len(buf) > 1 << 16 and b"~HS" not in buf:
                n += buf[:-3].count(b"^XA")
                buf = buf[-3:]
        c.sendall(HS_READY)
        n += buf.count(b"^XA")
        tail = buf[-3:]
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            n += (tail + chunk).count(b"^XA")
            tail = chunk[-3:]
        self.done(c, n)

    def done(self, c, labels):
        t = time.monotonic()
        with self.lock:
            self.labels += labels
            self.ends.append(t)
        c.close()

    def jobs(self):
        with self.lock:
            return len(self.ends)

    def wait_jobs(self, n, timeout=600):
        """The time the n-th job ended."""
        wait_for(lambda: self.jobs() >= n, timeout, f"{n} jobs at the raw printer")
        with self.lock:
            return self.ends[n - 1]


class Stamps:
    """The wall-clock times ippeveprinter's job command ran: a line per job, once whole."""

    def __init__(self, workdir):
        self.log = os.path.join(workdir, "stamps")
        open(self.log, "w").close()
        self.script = os.path.join(workdir, "stamp.sh")
        with open(self.script, "w") as f:
            # Wall-clock seconds (compared with time.time()); date costs a fork, not Python.
            f.write(f"#!/bin/sh\nexec date +%s.%N >> {self.log}\n")
        os.chmod(self.script, 0o755)

    def times(self):
        with open(self.log) as f:
            return [float(x) for x in f.read().split()]

    def wait_jobs(self, n, timeout=900):
        wait_for(lambda: len(self.times()) >= n, timeout, f"{n} jobs at ippeveprinter")
        return self.times()[n - 1]


class Cups:
    """A throw-away CUPS scheduler: cupsd -f with its own configuration, spool, state and
    logs in a fresh directory, listening on 127.0.0.1:port only; raw queues added with
    lpadmin. Its directory is in /tmp, not the bench's private one: the backends run as
    CUPS's user (lp) and must reach the spool."""

    def __init__(self, keep=False):
        import tempfile
        workdir = tempfile.mkdtemp(prefix="bench-print-cups-")
        os.chmod(workdir, 0o755)
        self.dir = workdir
        self.keep = keep
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        for d in ("root", "spool", "tmp", "cache", "state", "log"):
            os.makedirs(os.path.join(workdir, d), exist_ok=True)
        files = os.path.join(workdir, "root", "cups-files.conf")
        with open(files, "w") as f:
            f.write(f"ServerRoot {workdir}/root\nRequestRoot {workdir}/spool\n"
                    f"TempDir {workdir}/tmp\nCacheDir {workdir}/cache\n"
                    f"StateDir {workdir}/state\nErrorLog {workdir}/log/error_log\n"
                    f"AccessLog {workdir}/log/access_log\nPageLog {workdir}/log/page_log\n"
                    "FileDevice No\nSandboxing Relaxed\nSystemGroup root\n")
        conf = os.path.join(workdir, "root", "cupsd.conf")
        with open(conf, "w") as f:
            # No authentication on loopback: lpadmin and lp as root, nothing else listens.
            f.write(f"Listen 127.0.0.1:{self.port}\nLogLevel warn\nBrowsing No\n"
                    "WebInterface No\nDefaultAuthType None\nMaxJobs 0\n"
                    "PreserveJobHistory No\nPreserveJobFiles No\n"
                    "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
                    "<Policy default>\n  JobPrivateAccess all\n  JobPrivateValues none\n"
                    "  SubscriptionPrivateAccess all\n  SubscriptionPrivateValues none\n"
                    "  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n")
        self.out = open(os.path.join(workdir, "log", "cupsd.out"), "ab")
        self.proc = subprocess.Popen(["cupsd", "-f", "-c", conf, "-s", files],
                                     stdout=self.out, stderr=self.out)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"cupsd exited; see {workdir}/log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, 15, "cupsd")

    def add_queue(self, name, uri):
        subprocess.run(["lpadmin", "-h", self.server, "-p", name, "-E", "-v", uri],
                       check=True, capture_output=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.out.close()
        if self.keep:
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def median_p90(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.9))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="meson build directory")
    ap.add_argument("--devices", type=int, default=5000, help="labels in the batch")
    ap.add_argument("--live", type=int, default=200, help="live activations with print timed")
    ap.add_argument("--single", type=int, default=30,
                    help="single labels timed from the call to the printer, each side")
    ap.add_argument("--baseline", type=int, default=200, help="labels of the raw lp baseline")
    ap.add_argument("--ipp-baseline", type=int, default=100, help="labels of the IPP lp baseline")
    ap.add_argument("--workdir", help="where the store goes (default: the build dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    check_tools()
    print("command: " + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    results = []
    with Bench(a.build, a.workdir, a.keep) as b:
        print(f"machine: {machine_line(b.dir)}")
        sink = Sink()
        from test_print import IppPrinter
        ipp_dir = b.subdir("ipp")
        stamps = Stamps(ipp_dir)
        ipp = IppPrinter(ipp_dir, command=stamps.script)
        cups = Cups(a.keep)
        try:
            cups.add_queue("raw9100", f"socket://127.0.0.1:{sink.port}")
            cups.add_queue("ipp", ipp.url())
            tpad_side(a, b, sink, ipp, stamps, results)
            baseline(a, b, sink, stamps, cups, results)
        finally:
            cups.stop()
            ipp.stop()
    print()
    print("| measure | tpad | lp of a PDF per label (shell script, CUPS) |")
    print("|---|---|---|")
    for row in results:
        print("| " + " | ".join(row) + " |")


def tpad_side(a, b, sink, ipp, stamps, results):
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
        before, jobs = sink.labels, sink.jobs()
        with d.admin_client(timeout=600) as c:
            t0 = time.monotonic()
            r = c.call("io.tpad.Admin.Print", {"state": "ISSUED"})
        end = sink.wait_jobs(jobs + 1)
        assert r["labels"] == a.devices, r
        time.sleep(0.1)
        assert sink.labels - before == a.devices, (sink.labels, before)
        rates.append(a.devices / (end - t0))
    print(f"tpad: batch of {a.devices} labels to raw 9100, one ZPL job: "
          f"{statistics.median(rates):,.0f} labels/s (runs: "
          + ", ".join(f"{x:,.0f}" for x in rates) + ")")
    raw_batch = statistics.median(rates)
    sends = []
    with d.station_client() as c:
        for i in range(a.live):
            r = c.call("io.tpad.Station.Activate",
                       {"devEUI": f"70B3D6{i:010X}", "generateAppKey": True, "print": {}})
            sends.append(r["print"]["sendMs"])
    med, p90 = median_p90(sends)
    print(f"tpad: live activation, store commit to the job's last byte: median {med:.2f} ms, "
          f"p90 {p90:.2f} ms over {a.live}")
    commit = (med, p90)
    single = []
    with d.station_client() as c:
        for i in range(a.single):
            jobs = sink.jobs()
            t0 = time.monotonic()
            c.call("io.tpad.Station.Lookup", {"devEUI": f"70B3D6{i:010X}", "print": {}})
            single.append((sink.wait_jobs(jobs + 1) - t0) * 1000)
            time.sleep(0.05)
    raw_single = median_p90(single)
    print(f"tpad: one label to raw 9100 (Lookup with print), call to the last byte at the "
          f"printer: median {raw_single[0]:.2f} ms, p90 {raw_single[1]:.2f} ms")
    n0 = len(stamps.times())
    with d.admin_client(timeout=900) as c:
        t0 = time.time()
        r = c.call("io.tpad.Admin.Print", {"state": "ISSUED", "printer": "office"})
    end = stamps.wait_jobs(n0 + 1)
    n = r["labels"]
    pdf_size = os.path.getsize(ipp.files()[-1])
    ipp_batch = n / (end - t0)
    print(f"tpad: batch of {n} labels to ippeveprinter, one PDF of a page per label: "
          f"{ipp_batch:,.0f} labels/s ({end - t0:.1f} s, {pdf_size / n:,.0f} bytes of PDF "
          f"per label)")
    single = []
    with d.station_client() as c:
        for i in range(a.single):
            k = len(stamps.times())
            t0 = time.time()
            c.call("io.tpad.Station.Lookup",
                   {"devEUI": f"70B3D6{i:010X}", "print": {"printer": "office"}})
            single.append((stamps.wait_jobs(k + 1) - t0) * 1000)
    ipp_single = median_p90(single)
    print(f"tpad: one label to ippeveprinter (Lookup with print: PDF drawn, status asked, "
          f"Print-Job), call to the job whole at the printer: median {ipp_single[0]:.2f} ms, "
          f"p90 {ipp_single[1]:.2f} ms")
    # The baselines need no tpad; stop it now (the harness reads its notify socket
    # only while waiting for something, and STATUS= keeps coming every 5 s).
    b.stop_daemon(d)
    s.stop()
    results.extend([
        ["batch to raw 9100, labels/s", f"**{raw_batch:,.0f}** ({a.devices} labels, one ZPL "
         "job)", None],
        ["one label to raw 9100: call to the last byte at the printer, ms",
         f"**{raw_single[0]:.1f}** (p90 {raw_single[1]:.1f})", None],
        ["one live activation: store commit to the job's last byte (`print.sendMs`), ms",
         f"**{commit[0]:.2f}** (p90 {commit[1]:.2f}; goal < 5 ms median)", "—"],
        ["batch to IPP (ippeveprinter), labels/s",
         f"**{ipp_batch:,.0f}** ({n} labels, one PDF)", None],
        ["one label to IPP: call to the job whole at the printer, ms",
         f"**{ipp_single[0]:.1f}** (p90 {ipp_single[1]:.1f})", None],
    ])


def run_script(path, args=()):
    p = subprocess.run(["sh", path, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the baseline failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def baseline(a, b, sink, stamps, cups, results):
    """Shell scripts, one label at a time: a PDF made and handed to lp, per label."""
    work = b.subdir("baseline")
    layout = os.path.join(os.path.abspath(a.build), "test", "test-layout")
    text = ('LW:D0:70B3D57ED0000001:70B3D5$(printf %010X $i):00000000:'
            'O0123456789ABCDEF:C0000')
    # What a line would write: a PDF per label, then lp to the printer's CUPS queue.
    script = os.path.join(work, "lp-labels.sh")
    with open(script, "w") as f:
        f.write(f"""# lp-labels.sh QUEUE FIRST COUNT: a PDF per label, each handed to lp.
set -e
i=$2
end=$(($2 + $3))
while [ $i -lt $end ]; do
	{layout} render pdf "{text}" {work}/label-$i.pdf
	lp -h {cups.server} -d $1 {work}/label-$i.pdf >/dev/null
	rm -f {work}/label-$i.pdf
	i=$((i + 1))
done
""")
    print(f"baseline script ({script}):")
    with open(script) as f:
        print("    " + f.read().replace("\n", "\n    ").rstrip())

    # Raw 9100 through CUPS's socket backend.
    jobs = sink.jobs()
    t0 = time.monotonic()
    run_script(script, ("raw9100", "0", str(a.baseline)))
    submitted = time.monotonic() - t0
    end = sink.wait_jobs(jobs + a.baseline)
    raw_batch = a.baseline / (end - t0)
    print(f"baseline: {a.baseline} labels, a PDF and an lp each, to raw 9100: "
          f"{raw_batch:,.1f} labels/s at the printer ({submitted / a.baseline * 1000:.1f} ms "
          f"per label to submit)")
    single = []
    for i in range(a.single):
        jobs = sink.jobs()
        t0 = time.monotonic()
        run_script(script, ("raw9100", str(i), "1"))
        single.append((sink.wait_jobs(jobs + 1) - t0) * 1000)
    raw_single = median_p90(single)
    print(f"baseline: one label to raw 9100, script start to the last byte at the printer: "
          f"median {raw_single[0]:.1f} ms, p90 {raw_single[1]:.1f} ms")

    # The same to ippeveprinter through CUPS's ipp backend.
    k = len(stamps.times())
    t0 = time.time()
    run_script(script, ("ipp", "0", str(a.ipp_baseline)))
    end = stamps.wait_jobs(k + a.ipp_baseline)
    ipp_batch = a.ipp_baseline / (end - t0)
    print(f"baseline: {a.ipp_baseline} labels, a PDF and an lp each, to ippeveprinter: "
          f"{ipp_batch:,.1f} labels/s")
    single = []
    for i in range(min(a.single, 10)):
        k = len(stamps.times())
        t0 = time.time()
        run_script(script, ("ipp", str(i), "1"))
        single.append((stamps.wait_jobs(k + 1) - t0) * 1000)
    ipp_single = median_p90(single)
    print(f"baseline: one label to ippeveprinter, script start to the job whole at the "
          f"printer: median {ipp_single[0]:.1f} ms, p90 {ipp_single[1]:.1f} ms")

    # No CUPS at all: a ZPL file and socat per label to the raw printer.
    zpl = os.path.join(work, "socat.sh")
    with open(zpl, "w") as f:
        f.write(f"""set -e
i=0
while [ $i -lt {a.baseline} ]; do
	{layout} render zpl "{text}" {work}/l.zpl
	socat -u FILE:{work}/l.zpl TCP:127.0.0.1:{sink.port}
	i=$((i + 1))
done
""")
    jobs = sink.jobs()
    t0 = time.monotonic()
    run_script(zpl)
    end = sink.wait_jobs(jobs + a.baseline)
    socat = a.baseline / (end - t0)
    print(f"baseline: a ZPL file and a socat per label to raw 9100 (no CUPS): "
          f"{socat:,.1f} labels/s")

    cells = [f"{raw_batch:,.1f} ({a.baseline} labels; a ZPL file and socat per label, no "
             f"CUPS: {socat:,.1f})",
             f"{raw_single[0]:.1f} (p90 {raw_single[1]:.1f})",
             "—",
             f"{ipp_batch:,.1f} ({a.ipp_baseline} labels)",
             f"{ipp_single[0]:.1f} (p90 {ipp_single[1]:.1f})"]
    for row, cell in zip(results, cells):
        if row[2] is None:
            row[2] = cell


if __name__ == "__main__":
    main()
