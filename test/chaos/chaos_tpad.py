#!/usr/bin/env python3
"""Randomized chaos soak of tpad's exactly-once promise (README "Activation: exactly once,
never lost", ARCHITECTURE.md §10).

The real tpad (SQLite store) against the real tpa-sim, with several stations activating
devices concurrently (random timeouts, disconnects mid-call) while a chaos thread switches
the simulator's faults on and off, kill -9's and SIGTERMs tpad and restarts the simulator.
At the end, with the faults off and every PENDING row settled, it checks for every device:

  - the cloud imported it at most once (the simulator's duplicate_imports, summed over
    every simulator process);
  - every ownerToken and AppKey a station ever received is the store's and the cloud's;
  - every device the cloud holds is ISSUED in the store, with the cloud's token and key;
  - no device is FOREIGN (only this tpad imports), none is left PENDING or FAILED once
    asked again with the faults off.

On demand, not in the timed suite (it runs for minutes):

    test/chaos/chaos_tpad.py [--build build] [--seconds 120] [--seed N] [--stations 4]
                             [--store postgresql] [--profile dxmaker] [--weight ACTION=W]
                             [--conf LINE]
                             [--import-latency MS]

--store postgresql runs two tpads on one database of a throw-away cluster, whose server the
chaos thread also restarts (pg_ctl restart -m fast or -m immediate), pauses (SIGSTOP of the
postmaster and its backends, 0.5 to 8 s) and whose tpad backends it terminates
(pg_terminate_backend); after each, every tpad must find the store again by itself within
45 s (Status: store.up, not store.failing, a commit since the first look). --profile
dxmaker runs against tpa-sim --dx-maker with certificate TLS and OAuth2, with the token
endpoint failing and tokens revoked among the faults. Right after
each kill -9 (before the restart) every token a station received is read back ISSUED
from the store itself, so a reply sent before its commit is caught even though the
settler would later recover the token from the cloud.

The seed is printed; the same seed draws the same devices, timings and faults (thread
scheduling still differs from run to run). Exits 1 on a violation, naming the seed and
keeping the temporary directory (logs, store, the simulator's registry).
"""

import argparse
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

RULES = "upstream.request-timeout = 1s\nupstream.settle-after = 3s\nupstream.sessions = 2"


def parse_args():
    p = argparse.ArgumentParser(description="chaos soak of tpad's exactly-once promise")
    p.add_argument("--build", default=os.path.join(SRC, "build"), help="meson build directory")
    p.add_argument("--seconds", type=float, default=120.0, help="duration of the chaos phase")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    p.add_argument("--stations", type=int, default=4, help="concurrent station threads")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                   help="postgresql: two tpads on one database of a throw-away cluster")
    p.add_argument("--profile", choices=["tpa", "dxmaker"], default="tpa",
                   help="dxmaker: the DX Maker profile, certificate TLS and OAuth2 (the "
                   "token endpoint's faults join the chaos)")
    p.add_argument("--weight", action="append", default=[], metavar="ACTION=W",
                   help="chaos action weight (faults off kill9 term sim simkill freeze; "
                   "with --store postgresql also pgrestart pgpause pgterm), "
                   "e.g. --weight freeze=40")
    p.add_argument("--conf", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="an extra tpad.conf line, e.g. 'upstream.settle-after = 2s' (a "
                   "window shorter than the simulated cloud's 2.7 s must be caught)")
    p.add_argument("--import-latency", type=int, action="append", metavar="MS",
                   help="draw the cloud's import latency from these (default 0 to 2700 ms)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args()


ARGS = parse_args()
os.environ.setdefault("TPAD", os.path.join(ARGS.build, "daemon", "tpad"))
os.environ.setdefault("TPA_SIM", os.path.join(ARGS.build, "test", "tpa-sim", "tpa-sim"))
sys.path.insert(0, os.path.join(SRC, "test", "integration"))
sys.path.insert(0, os.path.join(SRC, "client", "python"))

import tpadtest  # noqa: E402
import tpad_client  # noqa: E402
from certs import PKI  # noqa: E402
from tpadtest import Daemon, PgCluster, Sim, sanitizer_report, write_secret  # noqa: E402

DX_CLIENT = "js-labs-api/maker1"


PG_BINDIR = next((d for d in [os.environ.get("PG_BINDIR", ""), "/usr/lib/postgresql/15/bin"]
                  + sorted(glob.glob("/usr/lib/postgresql/*/bin"))
                  if d and os.access(os.path.join(d, "pg_ctl"), os.X_OK)), None)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Soak:
    def __init__(self, seed, seconds, stations, store):
        self.seed = seed
        self.seconds = seconds
        self.n_stations = stations
        self.tmp = tempfile.mkdtemp(prefix="tpad-chaos-")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        # eui -> {"mode": "tkm"|"key"|"gen", "tkm": str, "key": str}
        self.devices = {}
        self.order = []
        self.next_dev = 0
        # eui -> set of (ownerToken, appKey) any station received
        self.received = {}
        self.violations = []
        self.stats = {k: 0 for k in (
            "activate", "activate_ok", "lookup", "lookup_ok", "outcome_unknown",
            "unavailable", "busy", "not_found", "conflict", "rejected", "store_failed",
            "timeout", "disconnect", "conn_error", "other_error", "import_calls",
            "import_rows", "import_issued", "import_skipped", "import_failed",
            "import_hangups")}
        self.chaos = {k: 0 for k in (
            "faults_on", "faults_off", "kill9", "sigterm", "sim_restart", "sim_kill9", "freeze",
            "tpad_start_failed", "pg_restart_fast", "pg_restart_immediate", "pg_pause",
            "pg_terminate", "pg_backends_terminated", "token_faults", "tokens_revoked")}
        # Seconds from the end of each PostgreSQL failure until every tpad's Status says
        # store.up and not store.failing again (by itself, without a restart of tpad).
        self.recoveries = []
        self.weights = {"faults": 35, "off": 20, "kill9": 18, "term": 10, "sim": 10,
                        "simkill": 4, "freeze": 6}
        if store == "postgresql":
            self.weights.update({"pgrestart": 8, "pgpause": 8, "pgterm": 10})
        self.duplicates = 0  # duplicate_imports of simulator processes gone
        self.psk = secrets.token_hex(16)
        simdir = os.path.join(self.tmp, "sim")
        os.makedirs(simdir)
        self.sim_starts = 0
        self.dx = None
        tls_args = None
        if ARGS.profile == "dxmaker":
            # As test_cloud.py's DxBase: tpa-sim --dx-maker with certificate TLS and OAuth2.
            self.psk = None
            pki = PKI(os.path.join(self.tmp, "pki"))
            pki.ca("good")
            crt, key = pki.issue("srv", "good", "127.0.0.1", ["DNS:127.0.0.1", "IP:127.0.0.1"])
            secret = secrets.token_hex(16)
            sim_secret = os.path.join(self.tmp, "sim-secret")
            write_secret(sim_secret, secret)
            self.dx = {"ca": pki.path("good.crt"), "secret": secret,
                       "sim": ["--dx-maker", "--oauth2", "--client-id", DX_CLIENT,
                               "--client-secret-file", sim_secret, "--customer-id",
                               "100004242", "--token-ttl", "20"]}
            tls_args = ["--cert", crt, "--key", key]
            self.weights.update({"token": 10, "revoke": 5})
        self.sim = Sim(simdir, self.psk, extra=self.sim_extra(), tls_args=tls_args)
        for w in ARGS.weight:
            k, _, v = w.partition("=")
            if k not in self.weights:
                sys.exit(f"--weight: unknown action {k}")
            self.weights[k] = float(v)
        self.store = store
        self.pg = None
        self.pg_url = None
        self.store_key = secrets.token_hex(32)
        n = 2 if store == "postgresql" else 1
        self.tpad_dirs = [os.path.join(self.tmp, f"tpad{i}") for i in range(n)]
        for d in self.tpad_dirs:
            os.makedirs(d)
        self.tpads = [None] * n
        self.expected_down = [False] * n

    def sim_extra(self):
        dx = self.dx["sim"] if self.dx else []
        return [*dx, "--seed", str(self.seed * 100 + self.sim_starts)]

    # ---- bookkeeping

    def violation(self, msg):
        with self.lock:
            self.violations.append(msg)
        log("VIOLATION: " + msg)

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def new_device(self, rng):
        with self.lock:
            self.next_dev += 1
            eui = f"70B3D5{self.seed % 0xFFFF:04X}{self.next_dev:06X}"
            mode = rng.choice(["tkm", "key", "gen"])
            dev = {"mode": mode,
                   "tkm": "%020X" % rng.getrandbits(80),
                   "key": "%032X" % rng.getrandbits(128)}
            self.devices[eui] = dev
            self.order.append(eui)
        return eui, dev

    def old_device(self, rng):
        with self.lock:
            if not self.order:
                return None, None
            # Mostly the recent ones, which are the likeliest to be in flight.
            n = len(self.order)
            i = n - 1 - min(n - 1, int(rng.expovariate(1 / 6)))
            eui = self.order[i]
            return eui, self.devices[eui]

    def got(self, eui, dev, device, how):
        """A station received device (a tpad_client.Device): record and check it at once."""
        with self.lock:
            self.received.setdefault(eui, set()).add((device.owner_token, device.app_key))
        if device.dev_eui != eui:
            self.violation(f"{eui}: {how} answered for {device.dev_eui}")
        if device.state != "ISSUED":
            self.violation(f"{eui}: {how} handed out a device in state {device.state}")
        if dev["mode"] == "tkm" and device.app_key is not None:
            self.violation(f"{eui}: {how} handed out an AppKey for a TKM device")
        if dev["mode"] != "tkm" and device.app_key is None:
            self.violation(f"{eui}: {how} handed out no AppKey for a device without an SE")
        if dev["mode"] == "key" and device.app_key and device.app_key != dev["key"]:
            self.violation(f"{eui}: {how} handed out another AppKey than the station's")

    def activate_params(self, eui, dev):
        p = {"devEUI": eui}
        if dev["mode"] == "tkm":
            p["tkmInfo"] = dev["tkm"]
        elif dev["mode"] == "key":
            p["appKey"] = dev["key"]
        else:
            p["generateAppKey"] = True
        return p

    # ---- stations

    def station(self, i):
        rng = random.Random(self.seed * 1000 + i)
        while not self.stop.is_set():
            try:
                self.station_step(rng)
            except Exception:
                self.violation(f"station {i} raised:\n{traceback.format_exc()}")
                time.sleep(0.5)
            time.sleep(rng.uniform(0, 0.1))

    def station_step(self, rng):
        r = rng.random()
        if r < 0.45:
            eui, dev = self.new_device(rng)
        else:
            eui, dev = self.old_device(rng)
            if eui is None:
                return
        lookup = r >= 0.85
        if not lookup and rng.random() < 0.12:
            return self.disconnect(rng, eui, dev)
        timeout = rng.choice([0.3, 1.0, 2.5, 8.0, 8.0, 8.0])
        path = self.station_path(rng.randrange(len(self.tpads)))
        self.count("lookup" if lookup else "activate")
        try:
            with tpad_client.Client(path, timeout=timeout) as c:
                if lookup:
                    d = c.lookup(eui)
                else:
                    d = c.activate(eui, tkm_info=dev["tkm"] if dev["mode"] == "tkm" else None,
                                   app_key=dev["key"] if dev["mode"] == "key" else None,
                                   generate_app_key=dev["mode"] == "gen")
            self.count("lookup_ok" if lookup else "activate_ok")
            self.got(eui, dev, d, "Lookup" if lookup else "Activate")
        except tpad_client.OutcomeUnknown:
            self.count("outcome_unknown")
        except tpad_client.UpstreamUnavailable:
            self.count("unavailable")
        except tpad_client.Busy:
            self.count("busy")
        except tpad_client.NotFound:
            self.count("not_found")
        except tpad_client.StoreFailed:
            self.count("store_failed")
        except tpad_client.Conflict as e:
            # Only this tpad imports these devices: a conflict means it took its own
            # import for someone else's (FOREIGN) or changed a record.
            self.count("conflict")
            self.violation(f"{eui}: Conflict {e}")
        except tpad_client.UpstreamRejected as e:
            self.count("rejected")
            self.violation(f"{eui}: UpstreamRejected {e}")
        except tpad_client.TpadTimeout:
            self.count("timeout")
        except tpad_client.TpadConnectionError:
            self.count("conn_error")
            time.sleep(0.05)
        except tpad_client.TpadError as e:
            self.count("other_error")
            self.violation(f"{eui}: unexpected error {e}")

    def disconnect(self, rng, eui, dev):
        """Send Activate and hang up before (or while) the answer comes."""
        self.count("disconnect")
        msg = json.dumps({"method": "io.tpad.Station.Activate",
                          "parameters": self.activate_params(eui, dev)}).encode() + b"\0"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(2)
            s.connect(self.station_path(rng.randrange(len(self.tpads))))
            s.sendall(msg)
            time.sleep(rng.choice([0, 0.01, 0.1, 0.5, 1.2]))
        except OSError:
            pass
        finally:
            s.close()

    # ---- the admin importing batches (tpactl import) among the stations

    def importer(self):
        rng = random.Random(self.seed * 1000 + 999)
        while not self.stop.wait(rng.uniform(1.0, 5.0)):
            try:
                self.import_step(rng)
            except Exception:
                self.violation(f"importer raised:\n{traceback.format_exc()}")

    def import_step(self, rng):
        rows = []
        euis = [self.new_device(rng)[0] for _ in range(rng.randint(2, 12))]
        euis += [e for e in (self.old_device(rng)[0] for _ in range(rng.randint(0, 3))) if e]
        for n, eui in enumerate(dict.fromkeys(euis)):
            dev = self.devices[eui]
            row = {"line": n + 1, "devEUI": eui}
            if dev["mode"] == "tkm":
                row["tkmInfo"] = dev["tkm"]
            elif dev["mode"] == "key":
                row["appKey"] = dev["key"]
            rows.append(row)
        self.count("import_calls")
        self.count("import_rows", len(rows))
        hangup = rng.random() < 0.2
        i = rng.randrange(len(self.tpads))
        try:
            with tpad_client.Client(os.path.join(self.tpad_dirs[i], "admin.sock"),
                                    timeout=rng.choice([2.0, 30.0]),
                                    interface="io.tpad.Admin") as a:
                for reply in a.call_more("io.tpad.Admin.Import", rows=rows,
                                         generateAppKeys=True,
                                         concurrency=rng.randint(1, 4), final=True):
                    if hangup:
                        self.count("import_hangups")
                        return
                    summary = reply.get("summary")
                    if summary:
                        self.count("import_issued", summary["issued"])
                        self.count("import_skipped", summary["skipped"])
                        self.count("import_failed", summary["failed"])
                        for f in summary["failures"]:
                            r = f["reason"]
                            if r.startswith(("conflict", "upstream rejected", "no tkmInfo")):
                                self.violation(f"{f['devEUI']}: Import: {r}")
        except tpad_client.TpadTimeout:
            self.count("timeout")
        except tpad_client.Busy:
            self.count("busy")
        except tpad_client.TpadConnectionError:
            self.count("conn_error")
        except tpad_client.TpadError as e:
            self.violation(f"Import: unexpected error {e}")

    # ---- the processes

    def station_path(self, i):
        return os.path.join(self.tpad_dirs[i], "station.sock")

    def start_sim(self, port=0):
        for _ in range(50):
            try:
                self.sim.extra = self.sim_extra()
                self.sim.start(port=port)
                self.sim_starts += 1
                return
            except AssertionError:
                # The port may still be taken for a moment after the last one exited.
                self.sim.stop()
                time.sleep(0.2)
        with open(self.sim.log_path, errors="replace") as f:
            raise RuntimeError("tpa-sim does not start again:\n" + f.read()[-3000:])

    def sim_counters(self):
        try:
            return self.sim.counters()
        except (OSError, AssertionError, ValueError):
            return None

    def start_tpad(self, i):
        if self.tpads[i] is None:
            kw = {}
            if self.pg_url:
                kw = dict(pg_url=self.pg_url, pg_password=self.pg.password,
                          key_hex=self.store_key, instance=f"line-{i}")
            conf = [RULES, *ARGS.conf]
            if self.dx:
                secret = os.path.join(self.tpad_dirs[i], "oauth2-secret")
                write_secret(secret, self.dx["secret"])
                conf[:0] = ["api.profile = dx-maker", f"upstream.ca-file = {self.dx['ca']}",
                            f"oauth2.client-id = {DX_CLIENT}",
                            f"oauth2.secret-file = {secret}", "api.hsm-group = HSM_LABS_PROD"]
            self.tpads[i] = Daemon(self.tpad_dirs[i], upstream_url=self.sim.url(),
                                   psk_hex=self.psk, conf_extra="\n".join(conf), **kw)
        t = self.tpads[i]
        for attempt in range(3):
            try:
                t.start()
                self.expected_down[i] = False
                return
            except AssertionError as e:
                self.chaos["tpad_start_failed"] += 1
                self.violation(f"tpad{i} did not start (attempt {attempt + 1}): "
                               f"{str(e)[-1500:]}")
                if t.proc:
                    t.kill()
                time.sleep(0.5)
        raise RuntimeError(f"tpad{i} does not start")

    def check_tpad_alive(self):
        for i, t in enumerate(self.tpads):
            p = t.proc if t else None
            if p and p.poll() is not None and not self.expected_down[i]:
                self.violation(f"tpad{i} exited by itself with {p.returncode}:\n"
                               + t.log_text()[-3000:])
                t.proc = None
                t.log.close()
                t.notify.close()
                self.start_tpad(i)

    def store_rows(self, sql):
        """Rows of sql on the store, read directly (not through tpad), as lists of fields."""
        if self.pg_url:
            out = self.pg.psql(sql, db=self.pg_url.split("/")[3].split("?")[0])
        else:
            out = subprocess.run(["sqlite3", self.tpads[0].store, sql], capture_output=True,
                                 text=True, check=True).stdout
        return [line.split("|") for line in out.split()]

    def check_durable(self, received):
        """Right after a kill -9, before any restart: every token a station received before
        it is committed ISSUED (a reply that carries a token follows the commit)."""
        rows = {r[0]: (r[1], r[2]) for r in
                self.store_rows("SELECT dev_eui, state, owner_token FROM devices")}
        for eui, got in received.items():
            for token, _ in got:
                if rows.get(eui) != ("ISSUED", token):
                    self.violation(f"{eui}: a station got {token} before the kill -9, the "
                                   f"store holds {rows.get(eui)}")

    def faults(self, **kw):
        for _ in range(20):
            try:
                return self.sim.faults(**kw)
            except (OSError, AssertionError):
                time.sleep(0.1)
        raise RuntimeError("tpa-sim's control port does not answer")

    def faults_off(self):
        if self.dx:
            self.faults(token_status=0)
        self.faults(drop_before_import=0, drop_before_answer=0, rate_5xx=0, rate_429=0,
                    malformed=0, import_latency_ms=0, query_latency_ms=0, latency_ms=0,
                    jitter_ms=0, reset_after=0, idle_close_ms=0, slow=False, refuse=False)

    # ---- chaos

    def random_faults(self, rng):
        # Every import lands within 2.7 s of its request (import latency; latency and
        # jitter delay only the answer), inside upstream.settle-after (3 s): a slower
        # cloud needs a longer settle-after.
        f = {
            "drop_before_import": rng.choice([0, 0, 0.1, 0.3]),
            "drop_before_answer": rng.choice([0, 0, 0.1, 0.3, 0.6]),
            "rate_5xx": rng.choice([0, 0, 0.1, 0.3]),
            "rate_429": rng.choice([0, 0, 0, 0.05, 0.2]),
            "retry_after": 1,
            "malformed": rng.choice([0, 0, 0, 0.05]),
            "import_latency_ms": rng.choice(ARGS.import_latency
                                            or [0, 0, 300, 900, 1500, 2000, 2700]),
            "query_latency_ms": rng.choice([0, 0, 200, 900]),
            "latency_ms": rng.choice([0, 0, 50]),
            "jitter_ms": rng.choice([0, 0, 100, 300]),
            "reset_after": rng.choice([0, 0, 0, 1, 3]),
            "idle_close_ms": rng.choice([0, 0, 300]),
            "refuse": rng.random() < 0.05,
            "slow": rng.random() < 0.05,
        }
        return f

    def chaos_thread(self):
        rng = random.Random(self.seed)
        try:
            while not self.stop.is_set():
                if self.stop.wait(rng.uniform(0.5, 4.0)):
                    break
                self.check_tpad_alive()
                self.chaos_step(rng)
        except Exception:
            self.violation("chaos thread raised:\n" + traceback.format_exc())

    def chaos_step(self, rng):
        action = rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        if action == "faults":
            f = self.random_faults(rng)
            self.faults(**f)
            self.chaos["faults_on"] += 1
            on = {k: v for k, v in f.items() if v and k != "retry_after"}
            log(f"faults {on}")
        elif action == "off":
            self.faults_off()
            self.chaos["faults_off"] += 1
            log("faults off")
        elif action == "freeze":
            # A tpad that stops running for a while (SIGSTOP: a VM paused, swapped out):
            # on PostgreSQL its claims expire and the other line takes its rows over.
            i = rng.randrange(len(self.tpads))
            pause = rng.choice([0.5, 2.0, 6.0, 9.0])
            log(f"tpad{i} frozen for {pause}s")
            self.chaos["freeze"] += 1
            pid = self.tpads[i].proc.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                os.kill(pid, signal.SIGCONT)
        elif action == "token":
            # The OAuth2 token endpoint failing (200 without a token, 5xx, 429/503 with
            # Retry-After) or back. Not a 400 or 401: those refuse our credentials (RFC
            # 6749 5.2), which tpad answers UpstreamRejected by design until they change.
            status = rng.choice([0, 0, 200, 429, 500, 502, 503])
            self.faults(token_status=status)
            self.chaos["token_faults"] += 1
            log(f"token endpoint {status or 'back'}")
        elif action == "revoke":
            # Every access token void at once: tpad must fetch a new one.
            for _ in range(20):
                try:
                    self.sim.control("POST", "/revoke-tokens")
                    break
                except (OSError, AssertionError):
                    time.sleep(0.1)
            self.chaos["tokens_revoked"] += 1
            log("access tokens revoked")
        elif action in ("pgrestart", "pgpause", "pgterm"):
            self.pg_failure(action, rng)
        elif action in ("kill9", "term"):
            i = rng.randrange(len(self.tpads))
            t = self.tpads[i]
            self.expected_down[i] = True
            if action == "kill9":
                with self.lock:
                    received = {e: set(g) for e, g in self.received.items()}
                t.kill()
                self.chaos["kill9"] += 1
                self.check_durable(received)
            else:
                try:
                    rc = t.stop(timeout=30)
                    if rc != 0:
                        self.violation(f"tpad{i} exited {rc} on SIGTERM")
                except AssertionError as e:
                    self.violation(str(e)[-3000:])
                self.chaos["sigterm"] += 1
            pause = rng.choice([0, 0.2, 1.0])
            log(f"tpad{i} {action}, restart after {pause}s")
            time.sleep(pause)
            self.start_tpad(i)
        else:
            c = self.sim_counters()
            if c is None:
                self.violation("tpa-sim's control port does not answer before a restart")
            else:
                self.duplicates += c["duplicate_imports"]
            port = self.sim.port
            if action == "simkill":
                self.sim.proc.kill()
                self.sim.proc.wait()
                self.sim.proc = None
                self.sim.stop()
                self.chaos["sim_kill9"] += 1
            else:
                self.sim.stop()
                self.chaos["sim_restart"] += 1
            pause = rng.choice([0, 0.3, 1.5])
            log(f"tpa-sim {action} (port {port}), restart after {pause}s")
            time.sleep(pause)
            self.start_sim(port)

    # ---- PostgreSQL's own failures (--store postgresql)

    def pg_ctl(self, *args):
        """pg_ctl on the throw-away cluster, as the user that owns it."""
        cmd = [os.path.join(PG_BINDIR, "pg_ctl"), "-D", os.path.join(self.pg.dir, "data"),
               *args]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {p.stdout}{p.stderr}")

    def pg_failure(self, action, rng):
        if action == "pgrestart":
            mode = rng.choice(["fast", "immediate"])
            log(f"PostgreSQL restart -m {mode}")
            self.pg_ctl("restart", "-m", mode, "-w", "-t", "60", "-l",
                        os.path.join(self.pg.dir, "data", "server.log"))
            self.chaos[f"pg_restart_{mode}"] += 1
        elif action == "pgpause":
            pause = rng.choice([0.5, 1.0, 3.0, 5.0, 8.0])
            log(f"PostgreSQL paused (SIGSTOP) for {pause}s")
            pids = self.pg._pids()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            self.chaos["pg_pause"] += 1
        else:
            n = self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE usename = 'tpad' AND pid <> pg_backend_pid()",
                             db="postgres")
            log(f"PostgreSQL: {n} backends of tpad terminated")
            self.chaos["pg_terminate"] += 1
            self.chaos["pg_backends_terminated"] += int(n)
        self.wait_store_recovered(action, 45)

    def store_status(self, i):
        with tpad_client.Client(os.path.join(self.tpad_dirs[i], "admin.sock"), timeout=10,
                                interface="io.tpad.Admin") as a:
            return a.call("io.tpad.Admin.Status")["store"]

    def wait_store_recovered(self, what, timeout):
        """Every tpad finds its store again by itself: Status says store.up and not
        store.failing (stations keep writing meanwhile, so a commit comes)."""
        start = time.monotonic()
        todo = set(range(len(self.tpads)))
        last = {}
        # A look right after the failure may come before tpad met it: a commit later than
        # the first look must have come, and no failure since the look before.
        first = {}
        while todo and time.monotonic() < start + timeout:
            for i in sorted(todo):
                try:
                    st = self.store_status(i)
                    last[i] = {k: st.get(k) for k in ("up", "failing", "downReason",
                                                       "commits", "failedCommits")}
                    first.setdefault(i, st.get("commits"))
                    if st.get("up") and not st.get("failing") and st["commits"] > first[i]:
                        todo.discard(i)
                except (tpad_client.TpadError, tpad_client.TpadConnectionError,
                        tpad_client.TpadTimeout, KeyError, TypeError) as e:
                    last[i] = repr(e)
            if todo:
                time.sleep(0.25)
        took = time.monotonic() - start
        if todo:
            self.violation(f"after {what}: tpad(s) {sorted(todo)} not recovered within "
                           f"{timeout}s: {last}")
        else:
            self.recoveries.append(took)
            log(f"store recovered after {what} in {took:.1f}s")

    # ---- settling and the verdict

    def admin_call(self, method, **params):
        with tpad_client.Client(os.path.join(self.tpad_dirs[0], "admin.sock"), timeout=30,
                                interface="io.tpad.Admin") as a:
            return a.call(method, **params)

    def wait_settled(self, timeout):
        end = time.monotonic() + timeout
        rows = None
        while time.monotonic() < end:
            try:
                rows = self.admin_call("io.tpad.Admin.Status")["store"]["rows"]
                if rows and rows["PENDING"] == 0:
                    return rows
            except (tpad_client.TpadError, tpad_client.TpadConnectionError, KeyError,
                    TypeError):
                pass
            time.sleep(0.5)
        self.violation(f"PENDING rows still unsettled after {timeout}s: {rows}")
        return rows

    def final_sweep(self, timeout):
        """Ask for every device again, with the faults off, until each is handed out."""
        todo = list(self.order)
        end = time.monotonic() + timeout
        while todo and time.monotonic() < end:
            later = []
            with tpad_client.Client(self.station_path(0), timeout=30) as c0, \
                    tpad_client.Client(self.station_path(-1), timeout=30) as c1:
                for n, eui in enumerate(todo):
                    c = (c0, c1)[n % 2]
                    dev = self.devices[eui]
                    try:
                        d = c.activate(eui, tkm_info=dev["tkm"] if dev["mode"] == "tkm" else None,
                                       app_key=dev["key"] if dev["mode"] == "key" else None,
                                       generate_app_key=dev["mode"] == "gen")
                        self.got(eui, dev, d, "final Activate")
                    except (tpad_client.OutcomeUnknown, tpad_client.UpstreamUnavailable,
                            tpad_client.Busy):
                        later.append(eui)
                    except tpad_client.TpadError as e:
                        self.violation(f"{eui}: final Activate: {e}")
            todo = later
            if todo:
                time.sleep(1)
        if todo:
            self.violation(f"{len(todo)} devices never activated with the faults off: "
                           f"{todo[:10]}")

    def verdict(self):
        c = self.sim_counters()
        dups = self.duplicates + (c["duplicate_imports"] if c else 0)
        if c is None:
            self.violation("tpa-sim's control port does not answer at the end")
        if dups:
            self.violation(f"the cloud saw {dups} duplicate import(s)")
        cloud = {d["deviceEUI"]: d for d in self.sim.devices()}
        states = dict(self.store_rows("SELECT dev_eui, state FROM devices"))
        store = {}
        for i in range(len(self.tpads)):
            with tpad_client.Client(self.station_path(i), timeout=30) as st:
                for eui in self.order:
                    try:
                        d = st.lookup(eui)
                        got = (d.owner_token, d.app_key)
                        if store.setdefault(eui, got) != got:
                            self.violation(f"{eui}: tpad{i} looks up {got}, tpad0 {store[eui]}")
                    except tpad_client.NotFound:
                        pass
                    except tpad_client.TpadError as e:
                        self.violation(f"{eui}: final Lookup on tpad{i}: {e}")
        for eui, st in states.items():
            if st != "ISSUED":
                self.violation(f"{eui}: left {st} in the store")
        for eui, dev in cloud.items():
            want = (dev["ownerToken"].upper(), dev.get("appKey", None))
            want = (want[0], want[1].upper() if want[1] else None)
            if eui not in self.devices:
                self.violation(f"{eui}: the cloud holds a device no station asked for")
                continue
            if eui not in store:
                self.violation(f"{eui}: the cloud holds it, the store does not hand it out "
                               f"(state {states.get(eui)})")
            elif store[eui] != want:
                self.violation(f"{eui}: store {store[eui]} != cloud {want}")
        for eui, got in self.received.items():
            if eui not in cloud:
                self.violation(f"{eui}: a station got {got} for a device the cloud lacks")
                continue
            want = (cloud[eui]["ownerToken"].upper(),
                    cloud[eui]["appKey"].upper() if cloud[eui].get("appKey") else None)
            for g in got:
                if g != want:
                    self.violation(f"{eui}: a station got {g}, the cloud holds {want}")
        for eui in store:
            if eui not in cloud:
                self.violation(f"{eui}: the store hands out a device the cloud lacks")
        for p in [t.log_path for t in self.tpads] + [self.sim.log_path]:
            r = sanitizer_report(p)
            if r:
                self.violation(f"sanitizer report in {p}: {r}")
        return cloud, store, states, dups

    def run(self):
        log(f"chaos_tpad seed={self.seed} seconds={self.seconds} stations={self.n_stations} "
            f"store={self.store} profile={ARGS.profile} tmp={self.tmp}")
        if self.store == "postgresql":
            self.pg = PgCluster(self.tmp).start()
            self.pg_url = self.pg.new_database()
        self.start_sim()
        for i in range(len(self.tpads)):
            self.start_tpad(i)
        threads = [threading.Thread(target=self.station, args=(i,), daemon=True)
                   for i in range(self.n_stations)]
        threads.append(threading.Thread(target=self.importer, daemon=True))
        chaos = threading.Thread(target=self.chaos_thread, daemon=True)
        for t in threads:
            t.start()
        chaos.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        chaos.join(120)
        for t in threads:
            t.join(60)
        log("chaos over: faults off, settling")
        if self.sim.proc is None or self.sim.proc.poll() is not None:
            self.start_sim(self.sim.port)
        self.faults_off()
        self.check_tpad_alive()
        for i, t in enumerate(self.tpads):
            if t.proc is None:
                self.start_tpad(i)
        self.wait_settled(60)
        self.final_sweep(90)
        rows = self.wait_settled(30)
        cloud, store, states, dups = self.verdict()
        # Stop cleanly: SIGTERM must still work after all that.
        for i, t in enumerate(self.tpads):
            self.expected_down[i] = True
            try:
                rc = t.stop(timeout=30)
                if rc != 0:
                    self.violation(f"tpad{i} exited {rc} on the final SIGTERM")
            except AssertionError as e:
                self.violation(str(e)[-3000:])
        self.sim.stop()
        if self.pg:
            self.pg.stop()
            self.pg = None
        print()
        print(f"seed {self.seed}, {self.seconds:.0f} s, {self.n_stations} stations, "
              f"{len(self.tpads)} tpad(s) on {self.store}, profile {ARGS.profile}, "
              f"{len(self.order)} devices")
        print("stations: " + ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        print("chaos:    " + ", ".join(f"{k} {v}" for k, v in self.chaos.items()))
        if self.recoveries:
            print(f"store:    recovered by itself {len(self.recoveries)} times, in "
                  f"{min(self.recoveries):.1f} to {max(self.recoveries):.1f} s")
        print(f"end:      cloud {len(cloud)} devices, store rows {rows}, duplicate imports "
              f"{dups}, devices received by stations {len(self.received)}")
        if self.violations:
            print(f"\nFAILED: {len(self.violations)} violation(s); reproduce with --seed "
                  f"{self.seed}; kept {self.tmp}")
            for v in self.violations[:40]:
                print("  - " + v.replace("\n", "\n    "))
            return 1
        print("OK: no violation")
        if not ARGS.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"kept {self.tmp}")
        return 0


def main():
    seed = ARGS.seed if ARGS.seed is not None else random.SystemRandom().randrange(1, 2**31)
    for b in (os.environ["TPAD"], os.environ["TPA_SIM"]):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not built (meson setup build && ninja -C build)")
    soak = Soak(seed, ARGS.seconds, ARGS.stations, ARGS.store)
    try:
        rc = soak.run()
    except Exception:
        traceback.print_exc()
        print(f"\nFAILED: the soak itself broke; reproduce with --seed {seed}; kept {soak.tmp}")
        rc = 2
    finally:
        for t in soak.tpads:
            if t and t.proc:
                t.kill()
        soak.sim.stop()
        if soak.pg:
            soak.pg.stop()
    sys.exit(rc)


if __name__ == "__main__":
    main()
