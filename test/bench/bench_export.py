#!/usr/bin/env python3
"""bench_export: PNG label export rate (labels/s) of tpactl export against qrencode per label.

Run on demand (never part of the timed suite):

    python3 test/bench/bench_export.py [BUILD] [--devices N] [--baseline N] [--repeats N]

A fresh tpad imports N devices (TKM_INFO and serial numbers) from tpa-sim on loopback,
then `tpactl export --format png --out DIR` is timed end to end (the daemon pages through
the store, hands out each TR005 label, base64 in the reply; tpactl decodes it and writes
DIR/<DevEUI>.png plus index.csv), median of --repeats runs into fresh directories: with
--code (the bare code) and with the whole label (the default); each Export stream is
also read by a client that writes nothing (tpad's part alone). The baseline, in the same run, is Debian's qrencode started once per label
(`qrencode -o FILE.png TEXT`, level M, its defaults) for the first --baseline texts of the
same index.csv, writing into the same filesystem. Labels go to --out-base (default
/dev/shm, so the numbers measure tpad and tpactl rather than the disk; pass a directory
on the disk to see what file creation costs there). Goal: at least 5,000 labels/s and 50
times the baseline.
"""

import argparse
import csv
import json
import socket
import tempfile
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_upstream  # noqa: E402
from bench_upstream import Bench, machine_line, table  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="meson build directory")
    ap.add_argument("--devices", type=int, default=5000, help="devices to export")
    ap.add_argument("--baseline", type=int, default=500, help="labels drawn by qrencode")
    ap.add_argument("--repeats", type=int, default=3, help="timed exports")
    ap.add_argument("--workdir", help="where the store and labels go (default: the build dir)")
    ap.add_argument("--out-base", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                    help="where label directories are written (default /dev/shm)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    qrencode = shutil.which("qrencode")
    if not qrencode:
        sys.exit("qrencode is missing (apt-get install qrencode)")
    print("command: " + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    with Bench(a.build, a.workdir, a.keep) as b:
        out_base = tempfile.mkdtemp(prefix="bench-labels-", dir=a.out_base or b.dir)
        print(f"machine: {machine_line(b.dir)}; labels written to {out_base} "
              f"({bench_upstream.fs_of(out_base)})")
        try:
            measure(a, b, out_base, qrencode)
        finally:
            shutil.rmtree(out_base, ignore_errors=True)


def raw_stream(admin, flag):
    """Seconds for tpad's Export stream read by a client that does nothing else."""
    params = {"format": "png", "state": "ISSUED"}
    if flag == ["--code"]:
        params["qr"] = {"label": False}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(admin)
        t0 = time.monotonic()
        s.sendall(json.dumps({"method": "io.tpad.Admin.Export", "parameters": params,
                              "more": True}).encode() + b"\0")
        tail = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                sys.exit("tpad closed the Export stream")
            tail = (tail + d)[-600:]
            if tail.endswith(b"\0") and b'"summary"' in tail.rsplit(b"\0", 2)[-2]:
                return time.monotonic() - t0


def measure(a, b, out_base, qrencode):
    """Import the devices, time the exports and the baseline, print the table."""
    s = b.sim()
    d = b.tpad(s.port, "upstream.sessions = 8")
    b.wait_warm(d)
    src = os.path.join(b.subdir("csv"), "rows.csv")
    with open(src, "w") as f:
        f.write("devEUI,tkmInfo,serial\n")
        for i in range(a.devices):
            f.write(f"{secrets.token_hex(8).upper()},{secrets.token_hex(10).upper()},"
                    f"SN-{i:07d}\n")
    subprocess.run([bench_upstream.tpadtest.TPACTL, "--socket", d.admin, "import", src,
                    "--concurrency", "64"], check=True, capture_output=True)
    s.stop()  # the export reads the store only

    # The bare code (--code), what qrencode draws too, then the whole label (the default:
    # the code with its captions at the label's size, as printed); each also read raw, by
    # a client that writes nothing (what tpad alone gives).
    timed = {}
    for kind, flag in (("code", ["--code"]), ("label", ["--label"])):
        runs = []
        for k in range(a.repeats):
            out = os.path.join(out_base, f"{kind}{k}")
            t0 = time.monotonic()
            subprocess.run([bench_upstream.tpadtest.TPACTL, "--socket", d.admin, "export",
                            "--format", "png", "--out", out] + flag, check=True,
                           capture_output=True)
            runs.append(time.monotonic() - t0)
            files = len([n for n in os.listdir(out) if n.endswith(".png")])
            if files != a.devices:
                sys.exit(f"export wrote {files} PNG files, expected {a.devices}")
            if k < a.repeats - 1:
                shutil.rmtree(out)
        sizes = [os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)[:200]
                 if n.endswith(".png")]
        raw = statistics.median(raw_stream(d.admin, flag) for _ in range(a.repeats))
        timed[kind] = (statistics.median(runs), runs, statistics.mean(sizes), raw)
    with open(os.path.join(out, "index.csv")) as f:
        texts = [r["qrText"] for r in csv.DictReader(f)][:a.baseline]

    base_dir = os.path.join(out_base, "qrencode")
    os.makedirs(base_dir)
    t0 = time.monotonic()
    for i, text in enumerate(texts):
        subprocess.run([qrencode, "-o", os.path.join(base_dir, f"{i}.png"), text],
                       check=True)
    base_secs = time.monotonic() - t0
    theirs = len(texts) / base_secs
    base_sizes = [os.path.getsize(os.path.join(base_dir, n)) for n in os.listdir(base_dir)]
    print(f"\nPNG label export, {a.devices} devices (TR005 text with serial, level M), "
          f"median of {a.repeats} runs each:\n")
    rows = []
    for kind, what in (("code", "tpactl export --format png --code (the bare code)"),
                       ("label", "tpactl export --format png (the whole label, the default)")):
        secs, runs, size, raw = timed[kind]
        rows.append([what, a.devices, " / ".join(f"{r:.2f}" for r in runs),
                     f"{a.devices / secs:.0f}", f"{a.devices / raw:.0f}", f"{size:.0f}"])
    rows.append(["qrencode -o FILE.png TEXT (a bare code), once per label", len(texts),
                 f"{base_secs:.2f}", f"{theirs:.0f}", "", f"{statistics.mean(base_sizes):.0f}"])
    print(table(["method", "labels", "seconds", "labels/s", "tpad's stream alone, labels/s",
                 "mean PNG bytes"], rows))
    code, label = (a.devices / timed[k][0] for k in ("code", "label"))
    print(f"\nratio (the whole label, the default): {label / theirs:.0f}x the per-label "
          f"qrencode baseline (goal >= 50x); {label:.0f} labels/s (goal >= 5000)")
    print(f"the bare code, as qrencode draws: {code / theirs:.0f}x, {code:.0f} labels/s")


if __name__ == "__main__":
    main()
