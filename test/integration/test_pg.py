"""Many lines, one store: tpad on a real PostgreSQL (ARCHITECTURE.md §11).

The suites that exercise the store run again on PostgreSQL (subclasses below), and several
tpads share one database: racing the same DevEUIs, kill -9 of one of them mid-import, the
database stopped and restarted under load, an offline batch imported through one line and
looked up on another with the cloud down. Each class gets a throw-away cluster
(test/pg/pgcluster.sh) and each test a fresh database.
"""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, wait_for

import test_activation
import test_cloud
import test_exactly_once
import test_offline
import test_print

TKM = "31110123D345666E2DBD"


def eui(n):
    return f"70B3D5{n:010X}"


class HoleProxy:
    """A TCP forwarder to PostgreSQL that can turn into a hole: connections it accepts
    then are never answered (a hung server or a middlebox), as libpq's connect_timeout
    does not cover a non-blocking connect."""

    def __init__(self, port):
        self.target = port
        self.hole = False
        self.live = []
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]

    def start(self):
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.live.append(c)
                if self.hole:
                    continue  # kept open, never answered
            u = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.live.append(u)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Close every connection made so far."""
        with self.lock:
            for c in self.live:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.live.clear()

    def close(self):
        # As test_print's Listener: wake the accept() and let it return before the
        # descriptor's number can go to another test's listener.
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if getattr(self, "thread", None):
            self.thread.join(10)
        self.ls.close()
        self.cut()


class PgLiveModes(test_activation.LiveModes):
    store_backend = "postgresql"


class PgFaults(test_activation.Faults):
    store_backend = "postgresql"

    # The cloud's misbehaviour alone, the same on either store: run on SQLite only.
    test_429_retry_after = None
    test_5xx = None
    test_resets_malformed_slow = None
    test_refused_then_recovers = None

    def daemon(self, **kw):
        # Here a second daemon is "a second line PC with its own store": its own database.
        if self.daemons and "pg_url" not in kw:
            kw.update(pg_url=self.pg.new_database(), pg_password=self.pg.password,
                      key_hex=self.store_key)
        return super().daemon(**kw)


class PgOffline(test_offline.Offline):
    """Import, export, listing and lookup with the cloud down, on PostgreSQL."""
    store_backend = "postgresql"


class PgRules(test_activation.Rules):
    store_backend = "postgresql"


class PgPrint(test_print.Print):
    """Printing reads the store (one device, or a batch by state) and audits each job."""
    store_backend = "postgresql"

    # The printers' own behaviour, the same on either store: run on SQLite only.
    test_hung_printer_delays_no_other_station = None
    test_ipp_printer = None
    test_check_config = None
    test_unreachable_and_unknown_printers = None


class PgRetire(test_cloud.Retire):
    """A reason's cuts are whole characters: PostgreSQL refuses half of one."""
    store_backend = "postgresql"

    # The cloud's part of Retire, the same on either store: run on SQLite only.
    test_retire_of_a_failed_device_while_it_is_activated = None
    test_retire_with_tpactl = None
    test_lost_answer_settled_by_query = None
    test_lost_request_deleted_again = None
    test_unavailable_changes_nothing = None


class PgSettleRace(test_exactly_once.SettleRace):
    store_backend = "postgresql"


class PgBackground(test_exactly_once.Background):
    store_backend = "postgresql"


class Lines(TpadTestCase):
    """Several tpads (lines) on one PostgreSQL database and one simulated cloud."""

    store_backend = "postgresql"

    def lines(self, n, sim_extra=(), conf_extra=""):
        psk = secrets.token_hex(16)
        self.s = self.sim(psk, extra=list(sim_extra)).start()
        ds = []
        for i in range(n):
            ds.append(self.daemon(upstream_url=self.s.url(), psk_hex=psk,
                                  instance=f"line-{i}", conf_extra=conf_extra).start())
        for d in ds:
            self.wait_ready(d)
        return ds

    def wait_ready(self, d):
        def ready():
            with d.admin_client() as a:
                up = a.call("io.tpad.Admin.Status")["upstream"]
            return all(s["state"] == "ready" for s in up["sessions"])
        wait_for(ready, 15, "warm upstream sessions")

    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")

    def activate_until_settled(self, d, e, deadline_s=40, params=None):
        end = time.monotonic() + deadline_s
        while True:
            try:
                with d.station_client(timeout=60) as c:
                    return c.call("io.tpad.Station.Activate",
                                  params or {"devEUI": e, "tkmInfo": TKM})["device"]
            except VarlinkError as err:
                if err.error not in ("io.tpad.Station.OutcomeUnknown",
                                     "io.tpad.Station.UpstreamUnavailable") \
                        or time.monotonic() > end:
                    raise
                time.sleep(0.3)

    def race(self, ds, euis):
        """Every line asks for every device at once; returns {(line, eui): device}."""
        out, errors = {}, []

        def station(i, d):
            order = euis if i % 2 == 0 else list(reversed(euis))
            for e in order:
                try:
                    out[(i, e)] = self.activate_until_settled(d, e)
                except Exception as ex:  # noqa: BLE001 - reported below
                    errors.append((i, e, ex))

        ts = [threading.Thread(target=station, args=(i, d)) for i, d in enumerate(ds)
              for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        return out

    def check_one_import_each(self, euis, out):
        sim = {x["deviceEUI"]: x["ownerToken"].upper() for x in self.s.devices()}
        c = self.s.counters()
        self.assertEqual(c["duplicate_imports"], 0, c)
        self.assertEqual(c["imports"], len(euis), c)
        for (i, e), dev in out.items():
            self.assertEqual(dev["ownerToken"], sim[e], (i, e))

    def test_one_store_instance_one_tpad(self):
        """store.instance names one tpad on a database: its key pool and claims go by that
        name, and two tpads of one name handed out the same cloud-HSM key. A second tpad
        of a name in use is refused at start, saying so; once its holder is gone the name
        is free at once, after a kill -9 too (the lock goes with the session). A tpad whose
        name another took while the database was away for it writes nothing more, and says
        why."""
        psk = secrets.token_hex(16)
        self.s = self.sim(psk).start()
        a = self.daemon(upstream_url=self.s.url(), psk_hex=psk, instance="hall-1").start()
        self.wait_ready(a)
        b = self.daemon(upstream_url=self.s.url(), psk_hex=psk, instance="hall-1")
        p = subprocess.run([tpadtest.TPAD, "--config", b.conf], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("another tpad on this database uses store.instance 'hall-1'", p.stderr)
        self.assertIn("give each tpad its own store.instance", p.stderr)
        dev = self.activate_until_settled(a, eui(0xB00))
        # The database drops the first tpad's hold (as a restart would) and the second
        # takes the name; when the first's connections come back, it is fenced.
        self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                     "query LIKE 'SELECT pg_try_advisory_lock%' AND pid <> pg_backend_pid()",
                     db="postgres")
        b.start()
        self.wait_ready(b)
        self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                     f"application_name = 'tpad' AND pid <> pg_backend_pid() AND pid NOT IN "
                     f"(SELECT pid FROM pg_locks WHERE locktype = 'advisory')",
                     db="postgres")

        def fenced():
            st = self.status(a)["store"]
            return not st["up"] and "uses store.instance 'hall-1'" in (st.get("downReason")
                                                                         or "")
        wait_for(fenced, 20, "the first tpad fenced")
        with self.assertRaises(VarlinkError) as e:
            with a.station_client(timeout=30) as c:
                c.call("io.tpad.Station.Activate", {"devEUI": eui(0xB01), "tkmInfo": TKM})
        self.assertIn(e.exception.error, ("io.tpad.Station.StoreFailed",
                                          "io.tpad.Station.UpstreamUnavailable"))
        self.assertIn("writes nothing more until it is restarted", a.log_text())
        # The second serves, from the same rows (its other connections were terminated with
        # the first's: a read may fail once, StoreFailed, as a station retries it).
        def looked_up():
            try:
                with b.station_client() as c:
                    return c.call("io.tpad.Station.Lookup", {"devEUI": eui(0xB00)})["device"]
            except VarlinkError as e:
                self.assertEqual(e.error, "io.tpad.Station.StoreFailed", e.params)
                return None
        got = wait_for(looked_up, 20, "the second tpad's Lookup")
        self.assertEqual(got["ownerToken"], dev["ownerToken"])
        a.stop()
        b.kill()
        # Both gone, the holder by kill -9: the name is free at once (the lock went with
        # the session), and a restart of the line is not refused.
        c = self.daemon(upstream_url=self.s.url(), psk_hex=psk, instance="hall-1").start()
        self.wait_ready(c)

    def test_two_lines_race_the_same_devices(self):
        ds = self.lines(2, conf_extra="upstream.sessions = 4")
        euis = [eui(10 + i) for i in range(40)]
        out = self.race(ds, euis)
        self.check_one_import_each(euis, out)
        rows = self.status(ds[0])["store"]["rows"]
        self.assertEqual((rows["ISSUED"], rows["PENDING"], rows["FAILED"]), (40, 0, 0))

    def test_three_lines_slow_cloud_claims(self):
        # Imports take 600 ms: the other lines find the claim live and wait for it.
        ds = self.lines(3, sim_extra=["--import-latency-ms", "600"],
                        conf_extra="upstream.sessions = 8")
        euis = [eui(100 + i) for i in range(8)]
        out = self.race(ds, euis)
        self.check_one_import_each(euis, out)
        waits = sum(self.status(d)["activations"]["claimWaits"] for d in ds)
        self.assertGreater(waits, 0)
        # Every attempt names the instance that made it.
        with ds[0].admin_client() as a:
            info = a.call("io.tpad.Admin.GetDevice", {"devEUI": euis[0]})
        self.assertEqual(len(info["attempts"]), 1)
        inst = self.pg.psql(f"SELECT instance FROM attempts WHERE dev_eui = '{euis[0]}'",
                            db=self.pg_url.split("/")[3].split("?")[0])
        self.assertIn(inst, ("line-0", "line-1", "line-2"))

    def test_kill_9_mid_import_survivor_settles_after_lease(self):
        ds = self.lines(2, sim_extra=["--import-latency-ms", "1500"],
                        conf_extra="upstream.request-timeout = 1s\nupstream.settle-after = 2s\n"
                                   "store.lease = 3s\nupstream.sessions = 8")
        a, b = ds
        euis = [eui(300 + i) for i in range(6)]
        with a.station_client() as c:
            for e in euis:
                c.send("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})
            time.sleep(0.5)  # every attempt committed and sent by line-0, none landed
        a.kill()
        dbname = self.pg_url.split("/")[3].split("?")[0]
        pending = self.pg.psql("SELECT count(*) FROM devices WHERE state = 'PENDING' "
                               "AND lease_owner = 'line-0'", db=dbname)
        self.assertEqual(pending, "6")
        t0 = time.monotonic()
        # The survivor is asked at once: it waits for the dead line's claim to expire, then
        # settles with the query (the imports landed meanwhile), never a second import.
        out = {e: self.activate_until_settled(b, e) for e in euis}
        self.assertGreater(time.monotonic() - t0, 1.0)
        self.check_one_import_each(euis, {(1, e): d for e, d in out.items()})
        rows = self.status(b)["store"]["rows"]
        self.assertEqual((rows["ISSUED"], rows["PENDING"]), (6, 0))
        self.assertGreater(self.status(b)["store"]["leaseTakeovers"], 0)
        # The attempts stay line-0's, though line-1 settled them.
        self.assertEqual(self.pg.psql("SELECT DISTINCT instance || ':' || outcome FROM attempts "
                                      f"WHERE dev_eui = '{euis[0]}'", db=dbname),
                         "line-0:landed")

    def test_background_settle_of_a_dead_line(self):
        ds = self.lines(2, sim_extra=["--import-latency-ms", "1500"],
                        conf_extra="upstream.request-timeout = 1s\nupstream.settle-after = 2s\n"
                                   "store.lease = 2s")
        a, b = ds
        with a.station_client() as c:
            c.send("io.tpad.Station.Activate", {"devEUI": eui(400), "tkmInfo": TKM})
            time.sleep(0.5)
        a.kill()
        # Nobody asks: the survivor's background settler takes the row after the lease.
        wait_for(lambda: self.status(b)["store"]["rows"]["ISSUED"] == 1, 30,
                 "settled by the survivor")
        self.assertEqual(self.s.counters()["imports"], 1)
        self.assertEqual(self.s.counters()["duplicate_imports"], 0)

    def test_database_restart_under_load(self):
        ds = self.lines(2, conf_extra="upstream.sessions = 4")
        stop = threading.Event()
        seen = {"ok": 0, "store_failed": 0, "other": []}
        n = [0]
        lock = threading.Lock()

        def station(d, base):
            k = 0
            while not stop.is_set():
                k += 1
                e = eui(base + k)
                try:
                    with d.station_client(timeout=30) as c:
                        c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})
                    with lock:
                        seen["ok"] += 1
                except VarlinkError as err:
                    with lock:
                        if err.error == "io.tpad.Station.StoreFailed":
                            seen["store_failed"] += 1
                            self.assertTrue(err.params.get("reason"), err.params)
                        else:
                            seen["other"].append(err.error)
                except OSError as err:
                    with lock:
                        seen["other"].append(str(err))
                with lock:
                    n[0] += 1

        ts = [threading.Thread(target=station, args=(d, 0x10000 * (i + 1)))
              for i, d in enumerate(ds)]
        for t in ts:
            t.start()
        wait_for(lambda: seen["ok"] > 20, 20, "load")
        self.pg.kill()
        time.sleep(1.5)
        with ds[0].station_client() as c:
            with self.assertRaises(VarlinkError) as cm:
                c.call("io.tpad.Station.Lookup", {"devEUI": eui(1)})
        self.assertEqual(cm.exception.error, "io.tpad.Station.StoreFailed")
        st = self.status(ds[0])["store"]
        self.assertFalse(st["up"], st)
        self.assertTrue(st["downReason"], st)
        m = ds[0].tpactl("--socket", ds[0].admin, "metrics", check=0).stdout
        self.assertIn('tpad_store_up{backend="postgresql"} 0', m)
        imports_down = self.s.counters()["imports"]
        time.sleep(1)
        # While down: nothing reaches the cloud (no attempt can commit).
        self.assertEqual(self.s.counters()["imports"], imports_down)
        self.pg.restart()
        t0 = time.monotonic()
        ok_before = seen["ok"]
        wait_for(lambda: seen["ok"] > ok_before + 10, 20, "service back")
        back_s = time.monotonic() - t0
        stop.set()
        for t in ts:
            t.join()
        self.assertLess(back_s, 10)
        self.assertGreater(seen["store_failed"], 0)
        self.assertEqual([x for x in seen["other"]
                          if x not in ("io.tpad.Station.OutcomeUnknown",)], [])
        # Every import the cloud got has its attempt in the store; nothing twice.
        c = self.s.counters()
        self.assertEqual(c["duplicate_imports"], 0, c)
        dbname = self.pg_url.split("/")[3].split("?")[0]
        attempts = int(self.pg.psql("SELECT count(DISTINCT dev_eui) FROM attempts", db=dbname))
        self.assertGreaterEqual(attempts, c["devices"])
        cloud = {x["deviceEUI"] for x in self.s.devices()}
        stored = set(self.pg.psql("SELECT dev_eui FROM attempts", db=dbname).split())
        self.assertEqual(cloud - stored, set())
        # Each line reconnects on its own backoff (at most 1 s): the service was back through
        # the other line already; this one follows within that.
        wait_for(lambda: self.status(ds[0])["store"]["up"], 10, "line 0's store to reconnect")
        st = self.status(ds[0])["store"]
        self.assertGreater(st["reconnects"], 0, st)
        self.assertGreater(st["commits"], 0, st)
        m = ds[0].tpactl("--socket", ds[0].admin, "metrics", check=0).stdout
        self.assertIn('tpad_store_up{backend="postgresql"} 1', m)
        self.assertIn('tpad_store_commit_duration_seconds_bucket{backend="postgresql",le="+Inf"}',
                      m)

    def test_claim_renewed_while_a_slow_import_runs(self):
        """A slow import keeps its claim: store.lease is extended every third of it."""
        # Renewed every 4 s; the import takes 5.5 s: the look at 4.5 s has time to spare
        # on a loaded machine.
        ds = self.lines(2, sim_extra=["--latency-ms", "5500"],
                        conf_extra="upstream.request-timeout = 6s\nstore.lease = 12s")
        dbname = self.pg_url.split("/")[3].split("?")[0]
        e = eui(0xA00)
        got = {}
        t = threading.Thread(target=lambda: got.update(
            dev=self.activate_until_settled(ds[0], e)))
        t0 = time.monotonic()
        t.start()
        wait_for(lambda: self.pg.psql(
            f"SELECT count(*) FROM devices WHERE dev_eui = '{e}'", db=dbname) == "1", 5,
            "the claim committed")
        time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
        # Renewed at ~4 s: about 11.5 s left; without renewal it would be under 7.5 s.
        left = float(self.pg.psql(
            f"SELECT extract(epoch FROM lease_until - now()) FROM devices "
            f"WHERE dev_eui = '{e}'", db=dbname))
        owner = self.pg.psql(f"SELECT lease_owner FROM devices WHERE dev_eui = '{e}'",
                             db=dbname)
        self.assertEqual(owner, "line-0")
        self.assertGreater(left, 9.5)
        # The other line sees the live claim and waits for its outcome: the same token.
        other = self.activate_until_settled(ds[1], e)
        t.join()
        self.assertEqual(other["ownerToken"], got["dev"]["ownerToken"])
        st = self.status(ds[0])["store"]
        self.assertGreaterEqual(st["leaseRenewals"], 1, st)
        c = self.s.counters()
        self.assertEqual((c["imports"], c["duplicate_imports"]), (1, 0), c)
        # Once ISSUED the claim is gone: a renewal finds nothing to extend.
        self.assertEqual(self.pg.psql(
            f"SELECT lease_owner FROM devices WHERE dev_eui = '{e}'", db=dbname), "")

    def test_a_frozen_database_never_stalls_the_loop(self):
        """Admin reads wait for the database without blocking anyone else."""
        (d,) = self.lines(1)
        for k in range(3):
            self.activate_until_settled(d, eui(0x900 + k))
        wait_for(lambda: self.status(d)["store"]["rows"]["ISSUED"] == 3, 5, "rows counted")
        self.pg.pause()
        try:
            results = {}

            def admin(name, method, params):
                t0 = time.monotonic()
                try:
                    with d.admin_client(timeout=60) as a:
                        results[name] = (a.call(method, params), time.monotonic() - t0)
                except VarlinkError as err:
                    results[name] = (err.error, time.monotonic() - t0)

            calls = [("list", "io.tpad.Admin.ListDevices", {}),
                     ("get", "io.tpad.Admin.GetDevice", {"devEUI": eui(0x900)}),
                     ("status", "io.tpad.Admin.Status", {})]
            ts = [threading.Thread(target=admin, args=c) for c in calls]
            for t in ts:
                t.start()
            time.sleep(0.3)
            # The loop is free: GetInfo on both sockets answers at once, many times.
            worst = 0.0
            for _ in range(20):
                for client in (d.station_client, d.admin_client):
                    t0 = time.monotonic()
                    with client(timeout=5) as c:
                        c.call("org.varlink.service.GetInfo")
                    worst = max(worst, time.monotonic() - t0)
            self.assertLess(worst, 0.5)
            # Status answers within its 1 s wait, with the rows as last counted.
            wait_for(lambda: "status" in results, 5, "Status while the database is frozen")
            st, took = results["status"]
            self.assertLess(took, 3)
            self.assertIn("rowsError", st["store"])
            self.assertEqual(st["store"]["rows"]["ISSUED"], 3)
            self.assertNotIn("list", results)  # still waiting for the database
        finally:
            self.pg.resume()
        for t in ts:
            t.join(30)
        # Once the database answers again, the reads that waited complete.
        devices, _ = results["list"]
        self.assertIsInstance(devices, dict, devices)
        self.assertEqual(len(devices["devices"]), 3)
        self.assertEqual(results["get"][0]["device"]["devEUI"], eui(0x900))

    def test_a_database_that_accepts_and_never_answers(self):
        """A reconnect that reaches a server that accepts the connection and says nothing
        gives up within connect_timeout and tries again: service is back within seconds
        of the server answering again (before, the connection waited for ever)."""
        port = int(re.search(r"port=(\d+)", self.pg_url).group(1))
        db = self.pg_url.split("/")[3].split("?")[0]
        proxy = HoleProxy(port).start()
        self.addCleanup(proxy.close)
        psk = secrets.token_hex(16)
        self.s = self.sim(psk).start()
        d = self.daemon(upstream_url=self.s.url(), psk_hex=psk, instance="line-0",
                        pg_url=f"postgresql://tpad@127.0.0.1:{proxy.port}/{db}",
                        pg_password=self.pg.password).start()
        self.wait_ready(d)
        dev = self.activate_until_settled(d, eui(0xA00))

        def lookup():
            with d.station_client(timeout=30) as c:
                return c.call("io.tpad.Station.Lookup", {"devEUI": eui(0xA00)})["device"]

        proxy.hole = True
        proxy.cut()
        # tpad finds its connections gone and reconnects into the hole.
        def store_failed():
            try:
                lookup()
                return False
            except VarlinkError as err:
                return err.error == "io.tpad.Station.StoreFailed"
        wait_for(store_failed, 10, "StoreFailed while the database does not answer")
        time.sleep(2)
        proxy.hole = False
        t0 = time.monotonic()

        def back():
            try:
                return lookup()["ownerToken"] == dev["ownerToken"]
            except VarlinkError:
                return False
        wait_for(back, 20, "the store back after the server answers again")
        self.assertLess(time.monotonic() - t0, 12)

    def test_an_unreachable_database_is_unhealthy_and_logged_once(self):
        """A database that does not answer: a write cut by a 15-s freeze is logged with the
        store in use (STORE_URL, no password; never the unused SQLite path); with the server
        killed, tpactl status exits 6 and says DOWN with the reason and the rows as last
        counted; the outage is logged once, "still unreachable" on a slow pace, and
        "reachable again" once, however many reconnects failed in between."""
        (d,) = self.lines(1)
        for k in range(3):
            self.activate_until_settled(d, eui(0xC00 + k))
        wait_for(lambda: self.status(d)["store"]["rows"]["ISSUED"] == 3, 5, "rows counted")
        self.pg.pause()
        try:
            with self.assertRaises(VarlinkError) as cm:
                with d.station_client(timeout=60) as c:
                    c.call("io.tpad.Station.Activate", {"devEUI": eui(0xC10), "tkmInfo": TKM})
            self.assertEqual(cm.exception.error, "io.tpad.Station.StoreFailed")
            wait_for(lambda: "store transaction failed" in d.log_text_all(), 5, "the failed commit")
        finally:
            self.pg.resume()
        line = [x for x in d.log_text_all().splitlines() if "store transaction failed" in x][0]
        self.assertIn("STORE_URL=postgresql://", line)
        self.assertNotIn("STORE_PATH", line)
        self.assertNotIn(self.pg.password, d.log_text_all())
        wait_for(lambda: self.status(d)["store"]["up"], 15, "the store back after the freeze")
        self.activate_until_settled(d, eui(0xC11))
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 5,
                 "healthy once a transaction commits again")
        wait_for(lambda: self.status(d)["store"]["rows"]["ISSUED"] == 4, 5, "rows counted")
        log0 = len(d.log_text_all())
        self.pg.kill()
        wait_for(lambda: not self.status(d)["store"]["up"], 10, "the store down")
        # Stations keep asking while it is down: every reconnect fails.
        t_end = time.monotonic() + 13
        while time.monotonic() < t_end:
            with self.assertRaises(VarlinkError):
                with d.station_client() as c:
                    c.call("io.tpad.Station.Activate", {"devEUI": eui(0xC20), "tkmInfo": TKM})
            time.sleep(0.5)
        p = d.tpactl("--socket", d.admin, "status")
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)
        self.assertIn("DOWN: the database cannot be reached:", p.stdout)
        self.assertIn("4 issued", p.stdout)
        self.assertIn("as counted at", p.stdout)
        p = d.tpactl("--socket", d.admin, "--json", "status")
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)
        st = json.loads(p.stdout)["store"]
        self.assertFalse(st["up"], st)
        self.assertTrue(st["downReason"], st)
        self.assertEqual(st["rows"]["ISSUED"], 4, st)
        self.assertIsInstance(st["rowsCountedAt"], int, st)
        self.assertTrue(st["rowsError"], st)
        m = d.tpactl("--socket", d.admin, "metrics", check=0).stdout
        self.assertIn('tpad_store_up{backend="postgresql"} 0', m)
        self.pg.restart()
        wait_for(lambda: self.status(d)["store"]["up"], 15, "the store back")
        wait_for(lambda: "reachable again" in d.log_text_all()[log0:], 5, "the line saying so")
        out = d.log_text_all()[log0:]
        def logged(text):
            return len(re.findall(rf"(?m)^(<\d>)?store: {text}", out))
        self.assertEqual(logged("the database cannot be reached: "), 1, out)
        self.assertEqual(logged("the database is still unreachable after 1[0-9] s"), 1, out)
        self.assertEqual(logged("the database is reachable again"), 1, out)
        # Each connection's loss at most once (two connections), not once per reconnect.
        self.assertLessEqual(logged("connection [0-9] to the database lost"), 2, out)
        self.assertEqual(d.tpactl("--socket", d.admin, "status").returncode, 0)

    def test_offline_batch_on_one_line_lookup_on_another(self):
        ds = self.lines(2)
        a, b = ds
        rows = test_offline.random_rows(12, ("tkm", "gen"))
        path = test_offline.write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        a.tpactl("--socket", a.admin, "import", path, "--generate-appkeys", check=0)
        self.s.stop()
        with b.station_client() as c:
            for r in rows:
                got = c.call("io.tpad.Station.Lookup", {"devEUI": r["devEUI"]})["device"]
                self.assertEqual(got["source"], "stored")
                self.assertEqual(got["state"], "ISSUED")
            nose = rows[1]
            key = c.call("io.tpad.Station.Lookup", {"devEUI": nose["devEUI"]})["device"]["appKey"]
        with a.station_client() as c:
            got = c.call("io.tpad.Station.Lookup", {"devEUI": nose["devEUI"]})["device"]
        self.assertEqual(got["appKey"], key)
        # The AppKey is sealed in the database, never in clear.
        dbname = self.pg_url.split("/")[3].split("?")[0]
        dump = subprocess.run(["pg_dump", self.pg_url], capture_output=True, text=True,
                              env={**os.environ, "PGPASSWORD": self.pg.password}).stdout
        self.assertIn(nose["devEUI"], dump)
        self.assertNotIn(key, dump.upper())
        self.assertNotIn(key.lower(), dump)
        # tpactl status says where the store is, and which line this is.
        p = a.tpactl("--socket", a.admin, "status")
        # The cloud is down: 4, or 5 once the breaker has opened.
        self.assertIn(p.returncode, (4, 5), p.stderr)
        st = p.stdout
        self.assertRegex(st, r"store: +postgresql .* as line-0")
        self.assertNotIn(self.pg.password, st)
        # tpactl backup says how a PostgreSQL store is backed up.
        p = a.tpactl("--socket", a.admin, "backup", os.path.join(self.tmp, "copy.db"), check=1)
        self.assertIn("pg_dump", p.stderr)
        # The audit trail names both lines.
        inst = self.pg.psql("SELECT DISTINCT instance FROM audit ORDER BY 1", db=dbname)
        self.assertEqual(inst.split(), ["line-0", "line-1"])

    def test_wrong_key_and_newer_schema_refused(self):
        d = self.daemon()
        d.start()
        d.stop()
        other = self.daemon(key_hex=secrets.token_hex(32), pg_url=self.pg_url,
                            pg_password=self.pg.password)
        other.start(wait=False)
        self.assertEqual(other.proc.wait(15), 1)
        self.assertIn("does not match", other.log_text())
        dbname = self.pg_url.split("/")[3].split("?")[0]
        self.pg.psql("UPDATE meta SET value = convert_to('9', 'UTF8') "
                     "WHERE key = 'schema_version'", db=dbname)
        d.start(wait=False)
        self.assertEqual(d.proc.wait(15), 1)
        self.assertIn("newer than this tpad", d.log_text())
        # --restore-store puts back SQLite files only: for a database, pg_restore.
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--restore-store",
                            os.path.join(self.tmp, "copy.db")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("restore the database with pg_restore", p.stderr)


class Credentials(TpadTestCase):
    """TLS per the URI (sslmode=verify-full) and the password from the credential."""

    store_backend = "postgresql"
    pg_ssl = True

    def test_verify_full_and_credential_directory(self):
        creds = os.path.join(self.tmp, "creds")
        os.makedirs(creds)
        tpadtest.write_secret(os.path.join(creds, "store-password"), self.pg.password)
        url = self.pg.new_database(tls=True)
        # No password file: only the credential store-password can let it in.
        d = self.daemon(pg_url=url, env={"CREDENTIALS_DIRECTORY": creds})
        with open(d.conf) as f:
            self.assertNotIn("password-file", f.read())
        d.start()
        with self.assertRaises(VarlinkError) as cm:
            with d.station_client() as c:
                c.call("io.tpad.Station.Lookup", {"devEUI": eui(1)})
        self.assertEqual(cm.exception.error, "io.tpad.Station.NotFound")
        n = self.pg.psql("SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                         "WHERE ssl AND application_name = 'tpad'", db="postgres")
        self.assertGreaterEqual(int(n), 2)
        d.stop()
        # Another CA: the server's certificate is refused, tpad does not start.
        ca2 = os.path.join(self.tmp, "other-ca.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=other", "-keyout", os.path.join(self.tmp, "o.key"),
                        "-out", ca2], check=True, capture_output=True)
        bad = self.daemon(pg_url=url.replace(os.path.join(self.pg.dir, "ca.crt"), ca2),
                          pg_password=self.pg.password)
        bad.start(wait=False)
        self.assertEqual(bad.proc.wait(20), 1)
        self.assertIn("certificate verify failed", bad.log_text())
        # A wrong password is refused with the server's reason, and the hint names where
        # the password came from, whole.
        wrong = self.daemon(pg_url=url, pg_password="not-the-password")
        wrong.start(wait=False)
        self.assertEqual(wrong.proc.wait(20), 1)
        self.assertIn("password authentication failed", wrong.log_text())
        self.assertIn("check the password in the credential store-password (or "
                      "store.password-file) against the role's password in the database",
                      wrong.log_text())
        in_url = self.daemon(pg_url=url.replace("://tpad@", "://tpad:url-wrong-pw@", 1))
        in_url.start(wait=False)
        self.assertEqual(in_url.proc.wait(20), 1)
        self.assertIn("check the password in store.url against the role's password in the "
                      "database", in_url.log_text())
        self.assertNotIn("url-wrong-pw", in_url.log_text())
        self.assertIn("store.url holds a password: move it to a file", in_url.log_text())
        # Both: the credential wins, and the log says so (the URL's is wrong, tpad serves).
        both = self.daemon(pg_url=url.replace("://tpad@", "://tpad:url-wrong-pw@", 1),
                           pg_password=self.pg.password,
                           key_hex=open(d.key_file).read().strip()).start()
        self.assertIn("store.url holds a password and the credential store-password is given "
                      "too (tpad uses the credential's)", both.log_text())
        self.assertNotIn("url-wrong-pw", both.log_text())
        both.stop()


class LostConnections(TpadTestCase):
    store_backend = "postgresql"

    def test_a_read_cut_by_a_lost_connection_is_not_called_a_write(self):
        """Connections killed by the server (pg_terminate_backend) under Lookups: a Lookup
        that fails says the connection was lost, never that "the write may or may not have
        committed" (it wrote nothing); the line serves again on its own."""
        psk = secrets.token_hex(16)
        sim = self.sim(psk).start()
        d = self.daemon(upstream_url=sim.url(), psk_hex=psk).start()
        with d.station_client() as c:
            for i in range(20):
                c.call("io.tpad.Station.Activate", {"devEUI": eui(200 + i), "tkmInfo": TKM})
        stop = threading.Event()
        reasons = []

        def lookups():
            with d.station_client(timeout=30) as c:
                i = 0
                while not stop.is_set():
                    try:
                        c.call("io.tpad.Station.Lookup", {"devEUI": eui(200 + i % 20)})
                    except VarlinkError as e:
                        reasons.append((e.error, e.params.get("reason", "")))
                    i += 1
        threads = [threading.Thread(target=lookups) for _ in range(3)]
        for th in threads:
            th.start()
        for _ in range(12):
            time.sleep(0.25)
            self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE application_name = 'tpad' AND pid <> pg_backend_pid()",
                         db="postgres")
        stop.set()
        for th in threads:
            th.join(30)
        self.assertTrue(reasons, "no Lookup met a lost connection")
        self.assertFalse([r for _, r in reasons if "write" in r], reasons[:5])
        def up():
            with d.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["store"]["up"]
        wait_for(up, 10, "the store back")
        with d.station_client() as c:
            self.assertEqual(c.call("io.tpad.Station.Lookup",
                                    {"devEUI": eui(200)})["device"]["state"], "ISSUED")


class Grants(TpadTestCase):
    """README's "Roles and grants": the tables made once by the owner role, the lines' role
    with only the grants listed there (no CREATE on the schema) starts and serves."""

    store_backend = "postgresql"

    TABLES = "devices, attempts, labels, audit, meta, app_key_pool"

    def line_role(self, table_rights="SELECT, INSERT, UPDATE", sequence=True):
        """The tables made by the owner role (a tpad started once), then a role for the
        lines with the rights given (README's by default): the cloud, its PSK, the store
        key and the role's URL (password line-pw)."""
        psk = secrets.token_hex(16)
        sim = self.sim(psk).start()
        owner = self.daemon(upstream_url=sim.url(), psk_hex=psk).start()
        owner.stop()
        self.db = self.pg_url.split("/")[3].split("?")[0]
        self.role = role = "line_" + secrets.token_hex(4)
        sql = f"CREATE ROLE {role} LOGIN PASSWORD 'line-pw';"
        if table_rights:
            sql += f"GRANT {table_rights} ON {self.TABLES} TO {role};"
        if sequence:
            sql += f"GRANT USAGE ON SEQUENCE audit_id_seq TO {role};"
        self.pg.psql(sql, db=self.db)
        self.assertEqual(self.pg.psql(f"SELECT has_schema_privilege('{role}', 'public', "
                                      f"'CREATE')", db=self.db), "f")
        with open(owner.key_file) as f:
            key = f.read().strip()
        url = self.pg_url.replace("://tpad@", f"://{role}@", 1)
        self.assertNotEqual(url, self.pg_url)
        return sim, psk, key, url

    def test_a_line_role_with_only_the_listed_grants(self):
        sim, psk, key, url = self.line_role()
        line = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=url,
                           pg_password="line-pw", key_hex=key).start()
        with line.station_client() as c:
            got = c.call("io.tpad.Station.Activate", {"devEUI": eui(90), "tkmInfo": TKM})
        self.assertEqual(got["device"]["state"], "ISSUED")
        line.stop()
        # Without a password: the error says where tpad takes one.
        nopw = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=url, key_hex=key)
        nopw.start(wait=False)
        self.assertEqual(nopw.proc.wait(20), 1)
        self.assertIn("LoadCredential=store-password", nopw.log_text())

    def test_a_role_without_the_listed_rights_is_refused_at_start(self):
        """A line's role with SELECT only, without the sequence: tpad does not start (before,
        it said ready and failed every write), and the log names what is missing and the
        GRANT that gives it; a role that may not create the tables on an empty database
        is told to start tpad once with the owner's."""
        sim, psk, key, url = self.line_role(table_rights="SELECT", sequence=False)

        def refused(pg_url):
            d = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=pg_url,
                            pg_password="line-pw", key_hex=key)
            d.start(wait=False)
            try:
                self.assertEqual(d.proc.wait(10), 1)
            finally:
                d.stop()
            return d.log_text()

        log = refused(url)
        self.assertIn(f"the role {self.role} lacks INSERT on devices, attempts, labels, audit, "
                      f"meta, app_key_pool; UPDATE on devices, attempts, labels, audit, meta, "
                      f"app_key_pool; USAGE on audit_id_seq: as the tables' owner, GRANT "
                      f"SELECT, INSERT, UPDATE ON devices, attempts, labels, audit, meta, "
                      f"app_key_pool TO {self.role}; GRANT USAGE ON SEQUENCE audit_id_seq TO "
                      f"{self.role}", log)
        self.assertNotIn("line-pw", log)
        empty = self.pg.new_database().replace("://tpad@", f"://{self.role}@", 1)
        self.assertIn("this role may not create or alter the tables: start tpad once with the "
                      "role that owns the database", refused(empty))

    def test_a_rotated_password_says_what_to_check_and_to_restart(self):
        """The role's password changed while a line runs: once its connections are cut,
        Status, tpactl status and the journal say the password was refused, where tpad's
        came from and that tpad reads it at start; SIGHUP after the file is rewritten
        names the file as needing a restart; restarted, the line serves."""
        sim, psk, key, url = self.line_role()
        line = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=url,
                           pg_password="line-pw", key_hex=key).start()
        self.pg.psql(f"ALTER ROLE {self.role} PASSWORD 'rotated-pw';"
                     f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     f"WHERE usename = '{self.role}'", db=self.db)

        def down_reason():
            with line.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["store"]["downReason"] or ""
        wait_for(lambda: "password authentication failed" in down_reason(), 10,
                 "a reconnect refused")
        hint = ("password authentication failed for user \"%s\"; check the password in the "
                "credential store-password (or store.password-file) against the role's "
                "password in the database (tpad reads it at start: restart tpad once it is "
                "right)" % self.role)
        self.assertIn(hint, down_reason())
        p = line.tpactl("--socket", line.admin, "status")
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)
        self.assertIn(hint, p.stdout)
        wait_for(lambda: "store: the database cannot be reached: " in line.log_text(), 5,
                 "the outage logged")
        self.assertIn(hint, line.log_text())
        tpadtest.write_secret(line.password_file, "rotated-pw")
        line.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: f"SIGHUP: store.password-file ({line.password_file}) changed since "
                         "tpad started; it is read at start only: restart tpad to use it"
                 in line.log_text(), 5, "SIGHUP naming the password file")
        line.stop()
        line.start()
        with line.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": eui(99), "tkmInfo": TKM})
        self.assertNotIn("rotated-pw", line.log_text_all())
        self.assertNotIn("line-pw", line.log_text_all())

    def test_one_refused_statement_does_not_fail_the_writes_after_it(self):
        """A write the database refuses (here the audit entry of a Lookup, while the
        sequence's grant is away) fails its own transaction only: once the grant is back,
        the next Lookups and their audit entries commit on the same connection (before,
        the failed transaction stayed open and every later one failed with "current
        transaction is aborted" until the connection was lost)."""
        sim, psk, key, url = self.line_role()
        line = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=url,
                           pg_password="line-pw", key_hex=key).start()
        with line.station_client() as c:
            for i in range(3):
                c.call("io.tpad.Station.Activate", {"devEUI": eui(95 + i), "tkmInfo": TKM})
        self.pg.psql(f"REVOKE USAGE ON SEQUENCE audit_id_seq FROM {self.role}", db=self.db)
        with line.station_client() as c:
            c.call("io.tpad.Station.Lookup", {"devEUI": eui(95)})
        wait_for(lambda: "permission denied for sequence audit_id_seq" in line.log_text(), 5,
                 "the refused audit entry")
        self.pg.psql(f"GRANT USAGE ON SEQUENCE audit_id_seq TO {self.role}", db=self.db)
        audit = int(self.pg.psql("SELECT count(*) FROM audit", db=self.db))
        with line.station_client() as c:
            for i in range(3):
                got = c.call("io.tpad.Station.Lookup", {"devEUI": eui(95 + i)})["device"]
                self.assertEqual(got["state"], "ISSUED")
        wait_for(lambda: int(self.pg.psql("SELECT count(*) FROM audit", db=self.db))
                 == audit + 3, 5, "the three Lookups audited")
        self.assertNotIn("current transaction is aborted", line.log_text())


class Copy(TpadTestCase):
    """tpad --copy-store: a populated SQLite store into PostgreSQL, resumable, verified."""

    store_backend = "postgresql"

    def copy_store(self, d, via_tpactl=False):
        """tpad --copy-store of d's SQLite store into the test database, or the same
        through tpactl store copy --to URL (which runs it)."""
        if via_tpactl:
            args = [tpadtest.TPACTL, "store", "copy", "--to", self.pg_url, "--config", d.conf,
                    "--tpad", tpadtest.TPAD]
        else:
            args = [tpadtest.TPAD, "--config", d.conf, "--copy-store", self.pg_url]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    def sqlite_line(self):
        """A cloud and a tpad on a SQLite store that knows the database's password (the
        copy reads it as tpad does): (sim, its PSK, the tpad)."""
        psk = secrets.token_hex(16)
        sim = self.sim(psk).start()
        pwfile = os.path.join(self.tmp, "pg.password")
        tpadtest.write_secret(pwfile, self.pg.password)
        d = self.daemon(upstream_url=sim.url(), psk_hex=psk, pg_url=None,
                        conf_extra=f"store.password-file = {pwfile}").start()
        return sim, psk, d

    def test_copy_then_lookup_everything_through_postgresql(self):
        sim, psk, d = self.sqlite_line()
        rows = test_offline.random_rows(30, ("tkm", "gen", "key"))
        path = test_offline.write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        d.tpactl("--socket", d.admin, "import", path, "--generate-appkeys", check=0)
        with d.station_client() as c:
            for i in range(5):
                c.call("io.tpad.Station.Activate", {"devEUI": eui(50 + i), "tkmInfo": TKM})
            for r in rows[:10]:
                c.call("io.tpad.Station.Lookup", {"devEUI": r["devEUI"], "qr": {"format": "png"}})
        before = {}
        with d.station_client() as c:
            for r in rows:
                before[r["devEUI"]] = c.call("io.tpad.Station.Lookup",
                                             {"devEUI": r["devEUI"]})["device"]
        d.stop()
        n_audit = int(subprocess.run(["sqlite3", d.store, "SELECT count(*) FROM audit"],
                                     capture_output=True, text=True).stdout)
        n_labels = int(subprocess.run(["sqlite3", d.store, "SELECT count(*) FROM labels"],
                                      capture_output=True, text=True).stdout)
        self.assertGreaterEqual(n_labels, 10)

        def copy():
            return self.copy_store(d, via_tpactl=True)

        p = copy()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("copied 35 devices (0 there already, 0 conflicting), 35 attempts", p.stdout)
        self.assertIn(f"verified: 35 devices, 35 attempts, {n_labels} labels, {n_audit} audit",
                      p.stdout)
        db = self.pg_url.split("/")[3].split("?")[0]
        # Interrupted half-way (rows lost): a second run copies what is missing, only that.
        self.pg.psql("DELETE FROM labels WHERE dev_eui IN (SELECT dev_eui FROM labels LIMIT 4);"
                     "DELETE FROM attempts WHERE dev_eui IN "
                     "(SELECT dev_eui FROM attempts LIMIT 3)", db=db)
        p = copy()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("copied 0 devices (35 there already, 0 conflicting), 3 attempts, "
                      "4 labels, 0 audit entries", p.stdout)
        self.assertEqual(int(self.pg.psql("SELECT count(*) FROM audit", db=db)), n_audit)
        # A running tpad holds the store: the copy refuses.
        d.start()
        p = copy()
        self.assertEqual(p.returncode, 1)
        self.assertIn("in use", p.stderr)
        d.stop()
        # Every device through a tpad on PostgreSQL, with the cloud down.
        sim.stop()
        with open(d.key_file) as f:
            key = f.read().strip()
        d2 = self.daemon(key_hex=key, upstream_url=sim.url(), psk_hex=psk).start()
        with d2.station_client() as c:
            for r in rows:
                got = c.call("io.tpad.Station.Lookup", {"devEUI": r["devEUI"]})["device"]
                self.assertEqual(got, before[r["devEUI"]])
            for i in range(5):
                got = c.call("io.tpad.Station.Lookup", {"devEUI": eui(50 + i)})["device"]
                self.assertEqual(got["state"], "ISSUED")
        # A store with another key is refused, nothing copied.
        db2 = self.pg.new_database()
        d3 = self.daemon(pg_url=db2, pg_password=self.pg.password).start()
        d3.stop()
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--copy-store", db2],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("does not match", p.stderr)


    def test_a_device_the_database_holds_otherwise_is_a_conflict(self):
        """Merging a line's store where the database holds one of its ISSUED devices in
        another state (FOREIGN, on a line whose import met ours as a 409): a conflict,
        exit 1, the database's row untouched; and an attempt of another line under the
        same number fails the verification (both once passed as "there already")."""
        _, _, d = self.sqlite_line()
        with d.station_client() as c:
            for i in range(3):
                c.call("io.tpad.Station.Activate", {"devEUI": eui(70 + i), "tkmInfo": TKM})
        d.stop()
        db = self.pg_url.split("/")[3].split("?")[0]

        def copy():
            return self.copy_store(d)

        self.assertEqual(copy().returncode, 0)
        self.pg.psql(f"UPDATE devices SET state = 'FOREIGN', owner_token = NULL "
                     f"WHERE dev_eui = '{eui(70)}'", db=db)
        p = copy()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("(2 there already, 1 conflicting)", p.stdout)
        self.assertIn("1 devices are held by the database with another record", p.stderr)
        self.assertEqual(self.pg.psql(f"SELECT state FROM devices WHERE dev_eui = '{eui(70)}'",
                                      db=db).strip(), "FOREIGN")
        self.pg.psql(f"UPDATE attempts SET digest = 'another line' WHERE dev_eui = '{eui(71)}'",
                     db=db)
        p = copy()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("verification failed: 1 of 2 attempts missing", p.stderr)

    def test_a_malformed_url_is_refused_without_its_password(self):
        """A store.url libpq cannot parse is refused by --check-config, and by
        --copy-store, with a message that never shows the password libpq echoes."""
        bad = "postgresql://tpad:SECRETPW@[::1/tpad"
        d = self.daemon(pg_url=bad)
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("store.url is not a valid connection string", p.stderr)
        self.assertIn("percent-encode", p.stderr)
        self.assertNotIn("SECRETPW", p.stdout + p.stderr)
        # A valid one: the check says it did not try the database.
        p = subprocess.run([tpadtest.TPAD, "--config", self.daemon().conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(f"the PostgreSQL store ({self.pg_url}) was not contacted: a start "
                      "tries the connection, the password and the role's rights\n", p.stdout)
        good = self.daemon(pg_url=None)
        p = subprocess.run([tpadtest.TPAD, "--config", good.conf, "--copy-store", bad],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn("SECRETPW", p.stdout + p.stderr)
        self.assertNotIn("copied 0 devices", p.stdout)


if __name__ == "__main__":
    tpadtest.main()
