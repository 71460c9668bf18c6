"""tpactl backup / io.tpad.Admin.Backup: an online copy of the store while stations keep
activating; mode 0600, integrity checked, consistent, refused where it would do harm."""

import os
import shutil
import pathlib
import subprocess
import secrets
import sqlite3
import stat
import threading

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, wait_for

TKM = "31110123D345666E2DBD"


def rows(path):
    """Every device row of the SQLite store at path, in DevEUI order."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM devices ORDER BY 1").fetchall()
    finally:
        db.close()


class Backup(TpadTestCase):
    def test_online_backup_while_serving(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 4").start()
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15, "ready")
        with d.station_client() as c:
            for i in range(200):
                c.call("io.tpad.Station.Activate", {"devEUI": f"00AA{i:012X}", "tkmInfo": TKM})
        # Stations keep activating while copies are taken.
        stop = threading.Event()
        errors, done = [], []

        def station(k):
            try:
                with d.station_client() as c:
                    i = 0
                    while not stop.is_set():
                        c.call("io.tpad.Station.Activate",
                               {"devEUI": f"0B{k:02X}{i:012X}", "tkmInfo": TKM})
                        done.append(1)
                        i += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=station, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            backups = []
            for n in range(3):
                path = os.path.join(self.tmp, f"copy{n}.db")
                # A relative path is resolved by tpactl against its own directory.
                p = d.tpactl("--socket", d.admin, "backup", os.path.relpath(path), check=0)
                self.assertIn("integrity ok", p.stdout)
                backups.append(path)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(done), 0, "no activation ran during the backups")
        live = sqlite3.connect(d.store)
        live_issued = dict(live.execute(
            "SELECT dev_eui, owner_token FROM devices WHERE state = 'ISSUED'").fetchall())
        live.close()
        for path in backups:
            st = os.stat(path)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, path)
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "delete")
            rows = db.execute("SELECT dev_eui, state, owner_token FROM devices").fetchall()
            db.close()
            self.assertGreaterEqual(len(rows), 200)
            # Consistent: every ISSUED row of the copy is ISSUED with the same token now.
            for eui, state, token in rows:
                if state == "ISSUED":
                    self.assertEqual(live_issued.get(eui), token, eui)
            self.assertFalse(os.path.exists(path + "-wal"))
        leftovers = [f for f in os.listdir(self.tmp) if ".tmp-" in f]
        self.assertEqual(leftovers, [])
        self.assertIn("store backed up to", d.log_text())

    def test_a_killed_backups_copy_goes_with_the_next_backup(self):
        """A backup whose tpad was killed before its rename leaves PATH.tmp-XXXXXX, a full
        copy holding every sealed key: the next backup to PATH removes it, and says so."""
        d = self.daemon().start()
        path = os.path.join(self.tmp, "line.db")
        left = path + ".tmp-Q7x2Lm"
        shutil.copyfile(d.store, left)
        with open(left + "-journal", "wb"):
            pass
        d.tpactl("--socket", d.admin, "backup", path, check=0)
        self.assertFalse(os.path.exists(left))
        self.assertFalse(os.path.exists(left + "-journal"))
        self.assertTrue(os.path.exists(path))
        self.assertIn("removed the unfinished copy an interrupted backup had left beside it",
                      d.log_text())
        self.assertEqual([f for f in os.listdir(self.tmp) if ".tmp-" in f], [])

    def test_refusals(self):
        d = self.daemon().start()
        with d.admin_client() as a:
            for path, why in [("relative.db", "absolute"), (d.store, "store itself"),
                              (d.store + "-wal", "store itself"), ("/tmp/", "not a directory")]:
                with self.subTest(path=path):
                    with self.assertRaises(VarlinkError) as e:
                        a.call("io.tpad.Admin.Backup", {"path": path})
                    self.assertEqual(e.exception.error, "io.tpad.Admin.InvalidParameter")
                    self.assertEqual(e.exception.params["parameter"], "path")
                    self.assertIn(why, e.exception.params["reason"])
            with self.assertRaises(VarlinkError) as e:
                a.call("io.tpad.Admin.Backup", {"path": os.path.join(self.tmp, "no", "x.db")})
            self.assertEqual(e.exception.error, "io.tpad.Admin.BackupFailed")
            self.assertIn("cannot create", e.exception.params["reason"])
        p = d.tpactl("--socket", d.admin, "backup", os.path.join(self.tmp, "no", "x.db"),
                     check=1)
        self.assertIn("BackupFailed", p.stderr)
        d.tpactl("--socket", d.station, "backup", os.path.join(self.tmp, "x.db"), check=2)
        d.tpactl("--socket", d.admin, "backup", check=2)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x.db")))

    def test_only_an_earlier_copy_is_replaced(self):
        # A copy is renamed over its path: the lock file, a key, the configuration or any
        # other file that is not a SQLite database must never be what it replaces.
        d = self.daemon().start()
        note = os.path.join(self.tmp, "notes.txt")
        with open(note, "w") as f:
            f.write("line 3 notes\n")
        files = {p: pathlib.Path(p).read_bytes()
                 for p in (d.store + ".lock", d.key_file, d.psk_file, d.conf, note)}
        with d.admin_client() as a:
            for path in files:
                with self.subTest(path=path):
                    with self.assertRaises(VarlinkError) as e:
                        a.call("io.tpad.Admin.Backup", {"path": path})
                    self.assertEqual(e.exception.error, "io.tpad.Admin.InvalidParameter")
                    self.assertEqual(e.exception.params["parameter"], "path")
                    why = ("store itself" if path.endswith(".lock")
                           else "not a SQLite database")
                    self.assertIn(why, e.exception.params["reason"])
            copy = os.path.join(self.tmp, "copy.db")
            a.call("io.tpad.Admin.Backup", {"path": copy})
            first = os.stat(copy).st_ino
            a.call("io.tpad.Admin.Backup", {"path": copy})  # an earlier copy: replaced
            self.assertNotEqual(os.stat(copy).st_ino, first)
            empty = os.path.join(self.tmp, "empty.db")
            open(empty, "w").close()
            a.call("io.tpad.Admin.Backup", {"path": empty})
        for path, data in files.items():
            self.assertEqual(pathlib.Path(path).read_bytes(), data, path)
        # The lock still holds: a second tpad on the same store is refused.
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is in use by another tpad (pid %d)" % d.proc.pid, p.stderr)

    def restore(self, d, path):
        return subprocess.run([tpadtest.TPAD, "--config", d.conf, "--restore-store", path],
                              capture_output=True, text=True, timeout=30)

    def test_restore_from_a_copy_after_kill_9(self):
        """tpad --restore-store FILE: the copy is checked with the store key and put in
        place whole, the store it replaces kept whole beside it. Copying the file over
        store.path by hand after a kill -9 left the dead tpad's WAL for SQLite to replay
        onto the copy: devices the copy never held, or a corrupt store."""
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk).start()
        first = [f"00AB{i:012X}" for i in range(3)]
        later = [f"00AC{i:012X}" for i in range(3)]
        with d.station_client() as c:
            for e in first:
                c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})
        copy = os.path.join(self.tmp, "copy.db")
        d.tpactl("--socket", d.admin, "backup", copy, check=0)
        with d.station_client() as c:
            for e in later:
                c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})
        # While tpad runs, nothing is done.
        p = self.restore(d, copy)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("is in use by another tpad (pid %d)" % d.proc.pid, p.stderr)
        d.kill()
        self.assertGreater(os.path.getsize(d.store + "-wal"), 0)
        before = pathlib.Path(d.store).read_bytes()
        # A copy damaged past its key check fails the integrity check of its snapshot.
        damaged = os.path.join(self.tmp, "damaged.db")
        db = sqlite3.connect(copy)
        try:
            root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'devices'"
                              ).fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()
        data = bytearray(pathlib.Path(copy).read_bytes())
        at = (root - 1) * size  # the devices table's page: its cells garbled
        data[at + 12:at + size] = b"\xa5" * (size - 12)
        pathlib.Path(damaged).write_bytes(bytes(data))
        # An empty file and another program's database: SQLite opens both (a start would
        # take either as a new store, every token gone from the line).
        empty = os.path.join(self.tmp, "empty.db")
        open(empty, "w").close()
        foreign = os.path.join(self.tmp, "foreign.db")
        db = sqlite3.connect(foreign)
        db.execute("CREATE TABLE x (a)")
        db.commit()
        db.close()
        # A copy a newer tpad made: said so, not a start's advice about the running store.
        newer = os.path.join(self.tmp, "newer.db")
        shutil.copyfile(copy, newer)
        db = sqlite3.connect(newer)
        db.execute("PRAGMA user_version = 9")
        db.close()
        # What is not a whole copy of this line's store is refused, the store untouched.
        for bad, why in [(d.conf, "cannot be restored"), (copy + ".none", "No such file"),
                         (newer, "newer.db: schema version 9 is newer than this tpad "
                                 "supports (3): a newer tpad made this copy; restore it with "
                                 "that tpad, or restore a copy of schema 3 or older"),
                         (empty, "empty.db is not a tpad store"),
                         (foreign, "foreign.db is not a tpad store (an empty database, or "
                                   "another program's): give a copy made by tpactl backup"),
                         (d.store, "is the store itself"),
                         (damaged, "damaged.db cannot be restored: the copy fails its "
                                   "integrity check")]:
            with self.subTest(bad=bad):
                p = self.restore(d, bad)
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertIn(why, p.stderr)
        self.assertEqual(pathlib.Path(d.store).read_bytes(), before)
        p = self.restore(d, copy)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"{d.store} restored from {copy}", p.stdout)
        kept = p.stdout.split("kept as ")[1].split(" ")[0]
        self.assertFalse(os.path.exists(d.store + "-wal"))
        self.assertEqual(stat.S_IMODE(os.stat(d.store).st_mode), 0o600)
        d.start()
        with d.station_client() as c:
            for e in first:
                self.assertEqual(c.call("io.tpad.Station.Lookup", {"devEUI": e})
                                 ["device"]["state"], "ISSUED")
            for e in later:
                with self.assertRaises(VarlinkError) as err:
                    c.call("io.tpad.Station.Lookup", {"devEUI": e})
                self.assertEqual(err.exception.error, "io.tpad.Station.NotFound")
        # The store it replaced is whole: its WAL went with it.
        db = sqlite3.connect(kept)
        try:
            n = db.execute("SELECT count(*) FROM devices").fetchone()[0]
        finally:
            db.close()
        self.assertEqual(n, len(first) + len(later))

    def test_restore_as_root_leaves_tpad_files_it_can_open(self):
        """Run as root on a machine where tpad never ran (no store, no lock file yet): the
        restored store and its lock file belong to the directory's owner (tpad's user
        under the unit), not to root, which tpad could not open."""
        if os.geteuid() != 0:
            self.skipTest("needs root to give files away")
        d = self.daemon().start()
        copy = os.path.join(self.tmp, "copy.db")
        d.tpactl("--socket", d.admin, "backup", copy, check=0)
        d.stop()
        home = os.path.join(self.tmp, "newhome")
        os.makedirs(home)
        os.chown(home, 65534, 65534)
        store = os.path.join(home, "tpad.db")
        conf = os.path.join(self.tmp, "new.conf")
        with open(d.conf) as f, open(conf, "w") as g:
            g.write(f.read().replace(d.store, store))
        p = subprocess.run([tpadtest.TPAD, "--config", conf, "--restore-store", copy],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("kept as", p.stdout)
        for path in (store, store + ".lock"):
            self.assertEqual((os.stat(path).st_uid, os.stat(path).st_gid), (65534, 65534), path)
        self.assertEqual(rows(store), rows(copy))


if __name__ == "__main__":
    tpadtest.main()
