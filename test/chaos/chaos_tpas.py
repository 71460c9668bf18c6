#!/usr/bin/env python3
"""chaos_tpas: a randomized soak of tpas's promises under kill -9, SIGTERM and a bad LRC.

    test/chaos/chaos_tpas.py [--seconds 120] [--seed N] [--devices 24] [--threads 4]
                             [--radio short|full] [--build build] [--keep]

It drives the real tpas (build/tpas/tpas, tpactl for keygen and import-astk) with:
  * an LRC (test/lrc-sim's LrcSim) posting signed uplinks of many devices from several
    threads, each uplink retried until it gets a 200 (the same request again, or signed
    again with a new Time), now and then a new session (a new AppSKey and DevAddr), and
    replays of uplinks already answered (the same request, or signed again);
  * the LRC's downlink endpoint: it checks the Token, finds which of the device's AppSKeys
    decrypts the payload, and records each (AppSKey, FCntDn) it receives;
  * an application process following io.tpad.AS.Uplinks, whose processed list is its
    resume point (one append per uplink), kill -9'd and resumed at random;
  * threads sending io.tpad.AS.SendDownlink concurrently;
  * a chaos thread: kill -9 and restart tpas, SIGTERM and restart it, kill -9 the
    application, make the LRC's downlink endpoint slow, failing, or lose its answers.

At the end, chaos off and every retry drained, it checks: each uplink the LRC got a 200
for is in the journal once, with the seq it was told, replays included; the journal has
nothing else and each (DevEUI, session, FCntUp) once; the application processed each seq
once, in order, across its restarts; no (AppSKey, FCntDn) reached the LRC twice; every
downlink reported sent reached the LRC, decrypting to its payload. A violation prints the
seed and exits 1 (the work directory is kept). The seed drives every random choice, but
the threads' timing does not repeat: a seed names a mix of events, not a schedule.
"""

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "lrc-sim"))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))

from lrc_sim import (DOWNLINK_PATH, FULL_RADIO, LrcSim, encrypt_astk, frm_crypt,  # noqa: E402
                     serve_posts, token)
from tpad_client import (AS, Busy, Client, InvalidParameter, LrcFailed,  # noqa: E402
                         TpadConnectionError, TpadError)

TUNNEL_KEY = "bec499c69e9c939e413b663961636c61"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


# The application: a child process, kill -9'd at random.

def app_main(sock, log_path):
    """Follow Uplinks; each processed uplink is one line appended to log_path (one write),
    and the last line's seq is where it resumes: the processing and the resume point are
    one record, so a kill -9 leaves neither a gap nor a second processing of its own."""
    seq = 0
    try:
        with open(log_path) as f:
            for line in f:
                if line.endswith("\n"):
                    seq = int(line.split()[0])
    except FileNotFoundError:
        pass
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while True:
        try:
            with Client(sock, timeout=None, interface=AS) as c:
                for reply in c.call_more("io.tpad.AS.Uplinks", after=seq, follow=True):
                    if reply.get("prunedThrough") is not None:
                        os.write(fd, b"pruned %d\n" % reply["prunedThrough"])
                    up = reply.get("uplink")
                    if up is None:
                        continue
                    os.write(fd, ("%d %s %s %d %s\n" % (up["seq"], up["devEUI"], up["devAddr"],
                                                        up["fCntUp"], up["payload"])).encode())
                    seq = up["seq"]
        except InvalidParameter as e:
            print(f"app: tpas refuses seq {seq}: {e}", file=sys.stderr)
            return 1
        except (TpadConnectionError, TpadError):
            pass
        time.sleep(0.1)


# The LRC.

class QuietLrc(LrcSim):
    """LrcSim with its state in memory only (the simulator is not restarted here)."""

    def save(self):
        pass


class Chaos:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(self.seed)
        self.tmp = tempfile.mkdtemp(prefix="chaos-tpas-")
        self.tpas_bin = os.path.join(args.build, "tpas", "tpas")
        self.tpactl = os.path.join(args.build, "client", "tpactl")
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.stop_chaos = threading.Event()
        self.violations = []
        self.counts = {k: 0 for k in (
            "uplinks", "posts", "retries", "resigned", "replays", "new_sessions", "early",
            "concurrent", "tpas_kill9", "tpas_sigterm", "app_kill9", "lrc_slow", "lrc_fail", "lrc_lost",
            "dl_sent", "dl_lrcfailed", "dl_busy", "dl_unknown", "dl_received",
            "dl_answer_lost")}
        # Uplinks: (dev, devaddr, fcnt) -> seq the LRC was told; seq -> that key; payloads.
        self.acked = {}
        self.acked_seq = {}
        self.sent_payload = {}
        # Devices: dev -> [(appskey hex, devaddr)], every session it had.
        self.sessions = {}
        self.known = []  # devices with an acked uplink (tpas has a session)
        # Downlinks: (appskey, fcnt) -> (dev, payload hex) received; the ones sent.
        self.received = {}
        self.dl_ok = []
        self.lrc_mode = "ok"
        self.tpas = None
        self.tpas_log = None
        self.app = None
        self.expected_exit = False

    def violation(self, what):
        with self.lock:
            self.violations.append(what)
        print(f"VIOLATION: {what}", flush=True)

    def count(self, k, n=1):
        with self.lock:
            self.counts[k] += n

    # Set-up.

    def setup(self):
        self.rsa_key = os.path.join(self.tmp, "as-rsa.pem")
        p = subprocess.run([self.tpactl, "as", "keygen", "--out", self.rsa_key],
                           capture_output=True, text=True, timeout=120, check=True)
        self.public_pem = p.stdout
        self.lrc = QuietLrc(os.path.join(self.tmp, "lrc.json"), TUNNEL_KEY, as_id="tpas-test")
        self.lrc_port = self.serve_downlinks()
        self.port = free_port()
        self.apps = os.path.join(self.tmp, "apps.sock")
        self.admin = os.path.join(self.tmp, "admin.sock")
        write_secret(os.path.join(self.tmp, "tunnel.key"), TUNNEL_KEY)
        write_secret(os.path.join(self.tmp, "store.key"), os.urandom(32).hex())
        self.conf = os.path.join(self.tmp, "tpas.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[tunnel]
listen = 127.0.0.1:{self.port}
key-file = {self.tmp}/tunnel.key
as-id = tpas-test
max-time-deviation = 60s
[apps]
socket = {self.apps}
[admin]
socket = {self.admin}
[store]
path = {self.tmp}/tpas.db
key-file = {self.tmp}/store.key
[astk]
rsa-key-file = {self.rsa_key}
[lrc]
url = http://127.0.0.1:{self.lrc_port}
request-timeout = 2s
""")
        self.lrc.as_url = f"http://127.0.0.1:{self.port}"
        self.start_tpas()
        self.astk = os.urandom(16)
        subprocess.run([self.tpactl, "--socket", self.admin, "as", "import-astk",
                        encrypt_astk(self.public_pem, self.astk)], capture_output=True,
                       text=True, timeout=60, check=True)
        self.app_log = os.path.join(self.tmp, "app.log")
        self.start_app()

    def start_tpas(self):
        self.tpas_log = open(os.path.join(self.tmp, "tpas.log"), "ab")
        self.tpas = subprocess.Popen([self.tpas_bin, "--config", self.conf, "--verbose"],
                                     stdout=self.tpas_log, stderr=self.tpas_log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.tpas.poll() is not None:
                self.violation(f"tpas exited {self.tpas.returncode} at its start")
                raise SystemExit(self.report())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                with Client(self.admin, 1, interface=AS) as c:
                    c.call("io.tpad.AS.Status")
                return
            except (OSError, TpadError):
                time.sleep(0.02)
        self.violation("tpas did not start within 20 s")
        raise SystemExit(self.report())

    def check_tpas_alive(self):
        if self.tpas.poll() is not None and not self.expected_exit:
            self.violation(f"tpas exited {self.tpas.returncode} on its own")
            self.tpas_log.close()
            self.start_tpas()

    def start_app(self):
        self.app = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--app",
                                     self.apps, self.app_log],
                                    stderr=open(os.path.join(self.tmp, "app.err"), "ab"))

    # The LRC's downlink endpoint.

    def serve_downlinks(self):
        # Quiet: tpas gives up on a slow answer, and its connection is gone.
        self.server = serve_posts(self.downlink, quiet=True)
        return self.server.server_address[1]

    def downlink(self, target):
        path, _, query = target.partition("?")
        if path != DOWNLINK_PATH:
            self.violation(f"downlink to {path}")
            return 404, "no such path"
        signed, sep, tok = query.rpartition("&Token=")
        if not sep or token(signed, TUNNEL_KEY) != tok.lower():
            self.violation(f"downlink with a bad Token: {query}")
            return 401, "bad Token"
        mode = self.lrc_mode
        if mode == "fail":
            return 500, "fault on demand"
        if mode == "slow":
            time.sleep(random.uniform(0.3, 3.5))
        q = dict(urllib.parse.parse_qsl(signed, keep_blank_values=True))
        dev = q.get("DevEUI", "").upper()
        if "FCntDn" not in q:
            self.violation(f"downlink for {dev} without FCntDn")
            return 400, "no FCntDn"
        fcnt = int(q["FCntDn"])
        cipher = bytes.fromhex(q.get("Payload", ""))
        with self.lock:
            sessions = list(self.sessions.get(dev, []))
        found = None
        for appskey, devaddr in sessions:
            plain = frm_crypt(bytes.fromhex(appskey), int(devaddr, 16), fcnt, 1, cipher)
            if plain.startswith(b"D") and plain[1:9] == dev.encode()[:8]:
                found = (appskey, plain.hex().upper())
                break
        if found is None:
            self.violation(f"downlink for {dev} FCntDn {fcnt}: no AppSKey of the device "
                           f"decrypts it")
            return 400, "does not decrypt"
        with self.lock:
            k = (found[0], fcnt)
            if k in self.received:
                self.violations.append(f"(AppSKey of {dev}, FCntDn {fcnt}) received twice: "
                                       f"{self.received[k][1]} and {found[1]}")
                print("VIOLATION: " + self.violations[-1], flush=True)
            self.received[k] = (dev, found[1])
            self.counts["dl_received"] += 1
            # The network's FCntDn moves on (uplinks report it) for the current session.
            cur = self.lrc.state["devices"].get(dev)
            if cur and cur["appskey"] == found[0]:
                cur["fcnt_dn"] = max(cur["fcnt_dn"], fcnt + 1)
        if mode == "lost":
            self.count("dl_answer_lost")
            return None, None
        return 200, "Request queued by LRC"

    # Uplinks.

    def send_until_200(self, rng, dev, devaddr, fcnt, build, first, req=None):
        """Post req (default build()'s request) until it is answered 200; sometimes signed
        again (a new Time). Records the seq; checks a replay gets the first seq. Returns
        the request answered 200 and when it was signed."""
        born = time.monotonic()
        if req is None:
            req = build()
        else:
            req, born = req
        while True:
            self.count("posts")
            try:
                status, ans = self.lrc.post(*req, timeout=10)
            except (OSError, http.client.HTTPException):
                status, ans = None, None
            if status == 200:
                break
            if status not in (None, 503):
                self.violation(f"uplink {dev} {devaddr} FCntUp {fcnt} answered {status} {ans}")
                if status != 401:
                    return None
            self.count("retries")
            if self.stop_chaos.is_set() and time.monotonic() - born > 120:
                self.violation(f"uplink {dev} FCntUp {fcnt} not answered 200 after chaos")
                return None
            time.sleep(rng.uniform(0.02, 0.3))
            if rng.random() < 0.3 or time.monotonic() - born > 30 or status == 401:
                req = build()
                born = time.monotonic()
                self.count("resigned")
        k = (dev, devaddr, fcnt)
        seq = ans.get("seq") if isinstance(ans, dict) else None
        if not isinstance(seq, int):
            self.violation(f"uplink {k}: 200 without a seq: {ans}")
            return None
        with self.lock:
            old = self.acked.get(k)
            other = self.acked_seq.get(seq)
            self.acked[k] = seq
            self.acked_seq[seq] = k
            if first and old is None:
                self.counts["uplinks"] += 1
        if old is not None and old != seq:
            self.violation(f"uplink {k} answered seq {old}, then seq {seq}")
        if other is not None and other != k:
            self.violation(f"seq {seq} given to {other} and to {k}")
        if not first and old is None:
            self.violation(f"replay of {k}, never answered before, got seq {seq}")
        return req, born

    def uplinker(self, idx, devs):
        rng = random.Random(self.seed * 1000 + idx)
        done = []  # (dev, devaddr, appskey, fcnt, with_key) acked, for replays
        state = {}
        for dev in devs:
            state[dev] = self.new_session(rng, dev)
        while not self.stop_load.is_set():
            dev = rng.choice(devs)
            if rng.random() < 0.03:
                state[dev] = self.new_session(rng, dev)
            d = self.lrc.state["devices"][dev]
            appskey, devaddr, fcnt = d["appskey"], d["dev_addr"], d["fcnt_up"]
            payload = f"U{dev}:{devaddr}:{fcnt}".encode()
            with_key = fcnt == 0 or rng.random() < 0.8
            self.sent_payload[(dev, devaddr, fcnt)] = payload.hex().upper()
            build = (lambda: self.build(dev, appskey, devaddr, fcnt, payload, with_key))
            req = (build(), time.monotonic())
            if fcnt == 0 and dev in self.known and rng.random() < 0.3:
                # The LRC posts the new session's second uplink, without the key, while the
                # first, with it, is held up: tpas answers it 503 (noSession) until the
                # first is in, then takes a retry of it under this session.
                self.count("early")
                p1 = f"U{dev}:{devaddr}:1".encode()
                self.sent_payload[(dev, devaddr, 1)] = p1.hex().upper()
                early = threading.Thread(target=self.send_until_200, args=(
                    random.Random(rng.random()), dev, devaddr, 1,
                    lambda: self.build(dev, appskey, devaddr, 1, p1, False), True))
                early.start()
                time.sleep(rng.uniform(0.02, 0.2))
                sent = self.send_until_200(rng, dev, devaddr, 0, build, True, req=req)
                early.join()
                d["fcnt_up"] = 2
                done.append((dev, devaddr, appskey, 0, sent))
                continue
            twin = None
            if rng.random() < 0.05:  # the LRC's retry while the first try is in flight
                self.count("concurrent")
                twin = threading.Thread(target=self.send_until_200, args=(
                    random.Random(rng.random()), dev, devaddr, fcnt, build, True,
                    req if rng.random() < 0.5 else None))
                twin.start()
            sent = self.send_until_200(rng, dev, devaddr, fcnt, build, True, req=req)
            if twin:
                twin.join()
            d["fcnt_up"] = fcnt + 1
            if fcnt == 0:
                with self.lock:
                    if dev not in self.known:
                        self.known.append(dev)
            done.append((dev, devaddr, appskey, fcnt, sent))
            if rng.random() < 0.08:  # the LRC sends one again: as it was, or signed again
                r = rng.choice(done[-50:])
                same = r[4] if r[4] and time.monotonic() - r[4][1] < 30 and \
                    rng.random() < 0.5 else None
                self.count("replays")
                rpay = f"U{r[0]}:{r[1]}:{r[3]}".encode()
                self.send_until_200(rng, r[0], r[1], r[3], lambda: self.build(
                    r[0], r[2], r[1], r[3], rpay, True), False, req=same)
            time.sleep(rng.uniform(0, 0.02))

    def new_session(self, rng, dev):
        appskey = bytes(rng.getrandbits(8) for _ in range(16))
        devaddr = "%08X" % rng.getrandbits(32)
        self.lrc.add_device(dev, self.astk, appskey=appskey, dev_addr=devaddr)
        with self.lock:
            self.sessions.setdefault(dev, []).append((appskey.hex(), devaddr))
        self.count("new_sessions")
        return appskey

    def build(self, dev, appskey, devaddr, fcnt, payload, with_key):
        """A signed uplink of one session (whatever the device's current one is)."""
        one = QuietLrc.__new__(QuietLrc)
        one.key, one.as_id = self.lrc.key, self.lrc.as_id
        d = dict(self.lrc.state["devices"][dev], appskey=appskey, dev_addr=devaddr)
        one.state = {"devices": {dev: d}}
        return one.build_uplink(dev, payload, fcnt=fcnt, with_key=with_key,
                                extra=FULL_RADIO if self.args.radio == "full" else None)

    # Downlinks.

    def downlinker(self, idx):
        rng = random.Random(self.seed * 1000 + 500 + idx)
        n = 0
        while not self.stop_load.is_set():
            with self.lock:
                devs = list(self.known)
            if not devs:
                time.sleep(0.1)
                continue
            dev = rng.choice(devs)
            n += 1
            payload = b"D" + dev.encode()[:8] + b"%d:%d" % (idx, n)
            try:
                with Client(self.apps, timeout=30, interface=AS) as c:
                    r = c.call("io.tpad.AS.SendDownlink", devEUI=dev, fPort=2,
                               payload=payload.hex())
                self.count("dl_sent")
                with self.lock:
                    self.dl_ok.append((dev, r["fCntDn"], payload.hex().upper(), r["status"]))
            except LrcFailed:
                self.count("dl_lrcfailed")
            except Busy:
                self.count("dl_busy")
            except TpadConnectionError:  # tpas away, or gone before its answer
                self.count("dl_unknown")
                time.sleep(0.1)
            except TpadError as e:
                self.violation(f"SendDownlink {dev}: {e}")
            time.sleep(rng.uniform(0, 0.05))

    # Chaos.

    def chaos(self):
        rng = random.Random(self.seed * 1000 + 999)
        while not self.stop_chaos.wait(rng.uniform(0.3, 3.0)):
            self.check_tpas_alive()
            x = rng.random()
            if x < 0.25:
                self.count("tpas_kill9")
                self.expected_exit = True
                self.tpas.kill()
                self.tpas.wait()
                self.tpas_log.close()
                time.sleep(rng.uniform(0, 1))
                self.start_tpas()
                self.expected_exit = False
            elif x < 0.4:
                self.count("tpas_sigterm")
                self.expected_exit = True
                self.tpas.send_signal(signal.SIGTERM)
                try:
                    rc = self.tpas.wait(20)
                    if rc != 0:
                        self.violation(f"tpas exited {rc} on SIGTERM")
                except subprocess.TimeoutExpired:
                    self.violation("tpas did not stop within 20 s of SIGTERM")
                    self.tpas.kill()
                    self.tpas.wait()
                self.tpas_log.close()
                time.sleep(rng.uniform(0, 0.5))
                self.start_tpas()
                self.expected_exit = False
            elif x < 0.6:
                self.count("app_kill9")
                self.app.kill()
                self.app.wait()
                time.sleep(rng.uniform(0, 0.5))
                self.start_app()
            else:
                mode = rng.choice(["slow", "fail", "lost", "ok", "ok"])
                if mode != "ok":
                    self.count("lrc_" + mode)
                self.lrc_mode = mode
        self.lrc_mode = "ok"

    def progress(self):
        while not self.stop_chaos.wait(10):
            with self.lock:
                c = dict(self.counts)
            print("  " + ", ".join(f"{k} {v}" for k, v in c.items() if v), flush=True)

    # The checks.

    def journal(self):
        with Client(self.apps, timeout=60, interface=AS) as c:
            return [r["uplink"] for r in c.call_more("io.tpad.AS.Uplinks", after=0,
                                                      follow=False) if "uplink" in r]

    def check(self):
        ups = self.journal()
        seqs = [u["seq"] for u in ups]
        if seqs != sorted(set(seqs)):
            self.violation("the journal's seqs are not strictly increasing")
        by_key = {}
        for u in ups:
            k = (u["devEUI"], u["devAddr"], u["fCntUp"])
            if k in by_key:
                self.violation(f"{k} journaled twice: seqs {by_key[k]} and {u['seq']}")
            by_key[k] = u["seq"]
            if k not in self.acked:
                self.violation(f"{k} journaled as seq {u['seq']}, never answered 200")
            elif self.acked[k] != u["seq"]:
                self.violation(f"{k} journaled as seq {u['seq']}, answered {self.acked[k]}")
            if self.sent_payload.get(k) != u["payload"]:
                self.violation(f"{k} seq {u['seq']}: payload {u['payload']} is not what "
                               f"was sent")
        for k, seq in self.acked.items():
            if k not in by_key:
                self.violation(f"{k} answered 200 seq {seq}, not in the journal")
        # The application: caught up, each seq once, in order.
        deadline = time.monotonic() + 60
        last = seqs[-1] if seqs else 0
        while time.monotonic() < deadline:
            lines = self.app_lines()
            if lines and lines[-1][0] >= last:
                break
            time.sleep(0.2)
        lines = self.app_lines()
        got = [x[0] for x in lines]
        if got != seqs:
            dup = len(got) - len(set(got))
            bad = next((i for i in range(1, len(got)) if got[i] <= got[i - 1]), None)
            self.violation(f"the application processed {len(got)} uplinks ({dup} twice"
                           + (f", out of order at {got[bad - 1]} -> {got[bad]}"
                              if bad else "") + f"), the journal has {len(seqs)}")
        # Downlinks.
        for dev, fcnt, payload, status in self.dl_ok:
            with self.lock:
                received = list(self.received.items())
            hits = [k for k, v in received if k[1] == fcnt and v == (dev, payload)]
            if not hits:
                self.violation(f"downlink {payload} to {dev} reported sent with FCntDn {fcnt} "
                               f"(status {status}) never reached the LRC with it")
        return ups, lines

    def app_lines(self):
        out = []
        try:
            with open(self.app_log) as f:
                for line in f:
                    if line.startswith("pruned"):
                        self.violation("the application was told of pruned uplinks")
                        continue
                    p = line.split()
                    out.append((int(p[0]), p[1], p[2], int(p[3])))
        except FileNotFoundError:
            pass
        return out

    def report(self):
        with self.lock:
            c = dict(self.counts)
        print("counts: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        if self.violations:
            print(f"FAILED with seed {self.seed}: {len(self.violations)} violations; "
                  f"work directory kept: {self.tmp}")
            for v in self.violations[:30]:
                print("  " + v)
            return 1
        print(f"OK, seed {self.seed}")
        return 0

    def run(self):
        print(f"chaos_tpas: seed {self.seed}, {self.args.seconds} s, {self.args.devices} "
              f"devices over {self.args.threads} threads; work directory {self.tmp}",
              flush=True)
        self.setup()
        devs = ["70B3D5%010X" % (0xC0000000 + i) for i in range(self.args.devices)]
        load = [threading.Thread(target=self.uplinker, args=(i, devs[i::self.args.threads]),
                                 daemon=True) for i in range(self.args.threads)]
        load += [threading.Thread(target=self.downlinker, args=(i,), daemon=True)
                 for i in range(self.args.downlinkers)]
        ch = threading.Thread(target=self.chaos, daemon=True)
        prog = threading.Thread(target=self.progress, daemon=True)
        for t in load + [ch, prog]:
            t.start()
        time.sleep(self.args.seconds)
        self.stop_chaos.set()
        ch.join()
        self.stop_load.set()
        for t in load:
            t.join(180)
            if t.is_alive():
                self.violation("a load thread did not finish within 180 s of the chaos")
        self.check_tpas_alive()
        if self.app.poll() is not None:
            self.violation(f"the application exited {self.app.returncode}")
            self.start_app()
        try:
            self.check()
        finally:
            self.app.kill()
            self.app.wait()
            self.expected_exit = True
            self.tpas.send_signal(signal.SIGTERM)
            try:
                self.tpas.wait(20)
            except subprocess.TimeoutExpired:
                self.violation("tpas did not stop within 20 s of SIGTERM")
                self.tpas.kill()
            self.server.shutdown()
        rc = self.report()
        if rc == 0 and not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--app":
        return app_main(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--devices", type=int, default=24)
    ap.add_argument("--threads", type=int, default=4, help="uplink threads (the LRC)")
    ap.add_argument("--downlinkers", type=int, default=3, help="threads sending downlinks")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build dir")
    ap.add_argument("--radio", choices=("short", "full"), default="short",
                    help="the uplinks' other fields: a few, or as the LRC sends them (1.3 KB)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    return Chaos(a).run()


if __name__ == "__main__":
    sys.exit(main())
