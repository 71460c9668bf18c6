"""Integration tests of offline mode: tpactl import/export/devices/device against tpa-sim."""

import csv
import json
import os
import secrets
import threading
import fcntl
import signal
import subprocess
import time

import tpadtest
from tpadtest import TpadTestCase, VarlinkError, wait_for

HEADER = "devEUI,joinEUI,tkmInfo,appKey,serial,profileId"


def random_rows(n, kinds=("tkm", "key", "gen")):
    """n rows with distinct random DevEUIs, cycling through the kinds of key material."""
    seen = set()
    rows = []
    while len(rows) < n:
        eui = secrets.token_hex(8).upper()
        if eui in seen:
            continue
        seen.add(eui)
        kind = kinds[len(rows) % len(kinds)]
        rows.append({
            "devEUI": eui,
            "joinEUI": "70B3D57ED0000001" if len(rows) % 2 else "",
            "tkmInfo": secrets.token_hex(10) if kind == "tkm" else "",
            "appKey": secrets.token_hex(16) if kind == "key" else "",
            "serial": f"SN-{len(rows):06d}" if len(rows) % 5 else "",
            "profileId": "",
        })
    return rows


def write_csv(path, rows, header=HEADER):
    cols = header.split(",")
    with open(path, "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(",".join(r.get(c, "") for c in cols) + "\n")
    return path


class Offline(TpadTestCase):
    def start(self, conf_extra="", sim_extra=(), registry=False):
        psk = secrets.token_hex(16)
        sim = self.sim(psk, registry=registry, extra=sim_extra).start()
        d = self.daemon(upstream_url=sim.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 8\n" + conf_extra).start()
        return sim, d

    def ctl(self, d, *args, **kw):
        return d.tpactl("--socket", d.admin, *args, **kw)

    def store_rows(self, d):
        with d.admin_client() as c:
            return c.call("io.tpad.Admin.Status")["store"]["rows"]

    def import_file(self, d, path, *args, check=0, timeout=120):
        p = self.ctl(d, "--json", "import", path, *args, check=check, timeout=timeout)
        lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        return lines, p

    def test_concurrency_is_1_to_1024_as_import_concurrency(self):
        """Import's concurrency takes import.concurrency's range, 1 to 1024, where it took
        1 to 64 only (a configured default of 100 was out of a client's reach); tpactl
        refuses --concurrency 0 instead of taking the default."""
        sim, d = self.start()
        row = {"line": 2, "devEUI": secrets.token_hex(8).upper(),
               "tkmInfo": secrets.token_hex(10)}
        with d.admin_client() as c:
            for bad in (-1, 0, 1025, "8", 2.5):
                with self.assertRaises(VarlinkError) as e:
                    c.call_more("io.tpad.Admin.Import",
                                {"rows": [row], "concurrency": bad, "final": True})
                self.assertEqual(e.exception.error, "io.tpad.Admin.InvalidParameter")
                self.assertEqual(e.exception.params["parameter"], "concurrency")
                if isinstance(bad, int):
                    self.assertIn("between 1 and 1024", e.exception.params["reason"])
            self.assertEqual(self.store_rows(d).get("ISSUED", 0), 0)  # nothing began
        del row["line"]
        path = write_csv(os.path.join(self.tmp, "one.csv"), [row])
        p = self.ctl(d, "import", path, "--concurrency", "0", check=None)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--concurrency must be at least 1", p.stderr)
        lines, p = self.import_file(d, path, "--concurrency", "1024")
        self.assertEqual(self.store_rows(d)["ISSUED"], 1)

    def test_import_5000_with_faults_exactly_once(self):
        sim, d = self.start()
        rows = random_rows(5000)
        path = write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        sim.faults(rate_5xx=0.05, drop_before_answer=0.02)
        lines, p = self.import_file(d, path, "--generate-appkeys", "--concurrency", "32")
        summary = lines[-1]["summary"]
        self.assertEqual(summary["total"], 5000)
        self.assertEqual(summary["issued"], 5000, p.stderr)
        self.assertEqual(summary["failed"], 0)
        self.assertEqual(summary["failures"], [])
        progress = [l["progress"] for l in lines if "progress" in l]
        self.assertGreater(len(progress), 3)
        self.assertEqual([x["done"] for x in progress], sorted(x["done"] for x in progress))
        self.assertTrue(all(x["total"] == 5000 for x in progress))
        counters = sim.counters()
        self.assertGreater(counters["errors_injected"], 100)
        self.assertEqual(counters["imports"], 5000)
        self.assertEqual(counters["devices"], 5000)
        self.assertEqual(counters["duplicate_imports"], 0)
        self.assertEqual(self.store_rows(d), {"PENDING": 0, "ISSUED": 5000, "FAILED": 0, "FOREIGN": 0,
                                                 "RETIRED": 0})
        # The cloud got each row's own key material.
        by_eui = {x["deviceEUI"]: x for x in sim.devices()}
        for r in rows[:300]:
            got = by_eui[r["devEUI"]]
            if r["tkmInfo"]:
                self.assertEqual(got["tkmInfo"], r["tkmInfo"].upper())
            elif r["appKey"]:
                self.assertEqual(got["appKey"], r["appKey"].upper())
            else:
                self.assertRegex(got["appKey"], "^[0-9A-F]{32}$")
        # Running the same file again sends nothing.
        before = sim.counters()["requests"]
        lines, _ = self.import_file(d, path, "--generate-appkeys")
        self.assertEqual(lines[-1]["summary"]["skipped"], 5000)
        self.assertEqual(sim.counters()["requests"], before)

    def test_kill_9_mid_import_then_resume(self):
        sim, d = self.start(sim_extra=["--latency-ms", "4"])
        n = 3000
        path = write_csv(os.path.join(self.tmp, "batch.csv"), random_rows(n))
        proc = subprocess.Popen([tpadtest.TPACTL, "--socket", d.admin, "--json", "import", path,
                                 "--generate-appkeys", "--concurrency", "16"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed_at = None
        for line in proc.stdout:
            msg = json.loads(line)
            if "progress" in msg and msg["progress"]["done"] >= 0.4 * n:
                killed_at = msg["progress"]["done"]
                d.proc.send_signal(signal.SIGKILL)
                break
        out, err = proc.communicate(timeout=30)
        d.kill()
        self.assertIsNotNone(killed_at, "the import finished before tpad could be killed")
        self.assertLess(killed_at, n)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("run the same command again", err)
        d.start()
        lines, p = self.import_file(d, path, "--generate-appkeys", "--concurrency", "16")
        summary = lines[-1]["summary"]
        self.assertEqual(summary["failed"], 0, summary["failures"][:5])
        self.assertEqual(summary["issued"] + summary["skipped"], n)
        self.assertGreater(summary["skipped"], 0)
        counters = sim.counters()
        self.assertEqual(counters["duplicate_imports"], 0)
        self.assertEqual(counters["devices"], n)
        self.assertEqual(self.store_rows(d), {"PENDING": 0, "ISSUED": n, "FAILED": 0, "FOREIGN": 0,
                                                 "RETIRED": 0})

    def test_ctrl_c_stops_cleanly_and_rerun_finishes(self):
        sim, d = self.start(sim_extra=["--latency-ms", "4"])
        n = 2500
        path = write_csv(os.path.join(self.tmp, "batch.csv"), random_rows(n, ("tkm",)))
        proc = subprocess.Popen([tpadtest.TPACTL, "--socket", d.admin, "--json", "import", path,
                                 "--concurrency", "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            msg = json.loads(line)
            if "progress" in msg and msg["progress"]["done"] >= 100:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("run the same command again", err)
        summary = json.loads(out.splitlines()[-1])["summary"]
        self.assertTrue(summary["interrupted"])
        self.assertLess(summary["done"], n)
        # The call in flight finished: nothing is left PENDING.
        self.assertEqual(self.store_rows(d)["PENDING"], 0)
        lines, _ = self.import_file(d, path)
        self.assertEqual(lines[-1]["summary"]["skipped"], summary["issued"])
        self.assertEqual(sim.counters()["duplicate_imports"], 0)
        self.assertEqual(self.store_rows(d)["ISSUED"], n)

    def test_bad_csv_files_name_lines_and_send_nothing(self):
        sim, d = self.start()
        good = random_rows(6, ("tkm",))
        e = [r["devEUI"] for r in good]
        t = [r["tkmInfo"] for r in good]
        cases = {
            "noheader.csv": (f"{e[0]},{t[0]}\n", [":1: no header"]),
            "nodeveui.csv": (f"joinEUI,tkmInfo\n70B3D57ED0000001,{t[0]}\n",
                             [":1: the header has no devEUI column"]),
            "unknowncol.csv": (f"devEUI,tkmInfo,color\n{e[0]},{t[0]},red\n",
                               [":1: unknown column 'color'"]),
            "badhex.csv": (f"devEUI,tkmInfo\n{e[0]},{t[0]}\n{e[1][:15]}X,{t[1]}\n"
                           f"{e[2]},{t[2][:19]}\n",
                           [f":3: devEUI '{e[1][:15]}X' is not 16 hexadecimal digits",
                            ":4: tkmInfo"]),
            "both.csv": (f"devEUI,tkmInfo,appKey\n{e[0]},{t[0]},{'00' * 16}\n",
                         [":2: both tkmInfo and appKey"]),
            # A mistyped key is a secret still: its length is named, never the key.
            "badkey.csv": (f"devEUI,appKey\n{e[0]},{'A9' * 15}C\n",
                           [":2: appKey is not 32 hexadecimal digits; it has 31 characters "
                            "(a key is not shown)"]),
            "neither.csv": (f"devEUI,serial\n{e[0]},A1\n", [":2: neither tkmInfo nor appKey"]),
            "dup.csv": (f"devEUI,tkmInfo\n{e[0]},{t[0]}\n{e[1]},{t[1]}\n{e[0].lower()},{t[2]}\n",
                        [f":4: duplicate devEUI {e[0]} (also on line 2)"]),
            "serial.csv": (f"devEUI,tkmInfo,serial\n{e[0]},{t[0]},A:B\n",
                           [":2: serial 'A:B' must be"]),
            "fields.csv": (f"devEUI,tkmInfo\n{e[0]},{t[0]},extra\n",
                           [":2: 3 fields where the header has 2"]),
            "quote.csv": (f"devEUI,tkmInfo\n{e[0]},{t[0]}\n{e[1]},ab\"c\n",
                          [":3: a quote inside an unquoted field"]),
            "empty.csv": ("", [":1: no header"]),
        }
        for name, (text, wants) in cases.items():
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            p = self.ctl(d, "import", path)
            self.assertEqual(p.returncode, 1, f"{name}: {p.stderr}")
            for want in wants:
                self.assertIn(path + want, p.stderr, name)
            self.assertIn("nothing was imported", p.stderr, name)
        # "Unicode text" (UTF-16) as Excel and Notepad save it: one clear error.
        path = os.path.join(self.tmp, "utf16.csv")
        with open(path, "w", encoding="utf-16") as f:
            f.write(f"devEUI,tkmInfo\n{e[0]},{t[0]}\n")
        p = self.ctl(d, "import", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(path + ":1: the file is UTF-16 text: save it as CSV UTF-8", p.stderr)
        self.assertEqual(p.stderr.count(path + ":"), 1, p.stderr)
        # A header and no rows: nothing to do, said so (tpactl ran into undefined behaviour
        # here: UBSan reported it in the sanitizer build).
        path = os.path.join(self.tmp, "header-only.csv")
        with open(path, "w") as f:
            f.write("devEUI,tkmInfo\n")
        p = self.ctl(d, "import", path, check=0)
        self.assertIn("0 of 0 rows", p.stdout)
        self.assertNotIn("runtime error", p.stderr)
        # Every error of a file is listed, in line order.
        path = os.path.join(self.tmp, "many.csv")
        with open(path, "w") as f:
            f.write(f"devEUI,tkmInfo\nzz,{t[0]}\n{e[1]},{t[1]}\n{e[2]},\n{e[3]},q\n")
        p = self.ctl(d, "import", path)
        errs = [l for l in p.stderr.splitlines() if l.startswith(path + ":")]
        self.assertEqual([l.split(":")[1] for l in errs], ["2", "4", "5"], p.stderr)
        counters = sim.counters()
        self.assertEqual(counters["requests"], 0)
        self.assertEqual(counters["imports"], 0)
        self.assertEqual(self.store_rows(d), {"PENDING": 0, "ISSUED": 0, "FAILED": 0, "FOREIGN": 0,
                                                 "RETIRED": 0})

    def test_header_forms_comments_quotes(self):
        sim, d = self.start()
        r = random_rows(3, ("tkm", "key", "gen"))
        path = os.path.join(self.tmp, "forms.csv")
        with open(path, "w") as f:
            f.write("\ufeff# exported by the MES\r\n\r\n"
                    "Serial , APPKEY,DEVEUI,tkminfo\r\n"
                    f"\"SN 1\",,{r[0]['devEUI'].lower()},{r[0]['tkmInfo']}\r\n"
                    "# a comment line\r\n"
                    f"\"SN-2\",{r[1]['appKey']}, {r[1]['devEUI']} ,\r\n"
                    f",,\"{r[2]['devEUI']}\",\r\n")
        p = self.ctl(d, "import", path, "--generate-appkeys")
        # "SN 1" holds a space, which a TR005 label cannot carry.
        self.assertEqual(p.returncode, 1)
        self.assertIn(path + ":4: serial 'SN 1'", p.stderr)
        with open(path) as f:
            text = f.read().replace("SN 1", "SN-1")
        with open(path, "w") as f:
            f.write(text)
        p = self.ctl(d, "import", path, "--generate-appkeys", check=0)
        self.assertIn("3 of 3 rows: 3 issued, 0 skipped", p.stdout)
        with d.admin_client() as c:
            dev = c.call("io.tpad.Admin.GetDevice", {"devEUI": r[0]["devEUI"]})["device"]
        self.assertEqual(dev["serial"], "SN-1")
        self.assertEqual(dev["tkmInfo"], r[0]["tkmInfo"].upper())
        self.assertFalse(dev["hasAppKey"])
        self.assertEqual(dev["origin"], "import")

    def test_semicolon_files_and_unknown_columns(self):
        sim, d = self.start()
        r = random_rows(3, ("tkm",))
        # Excel in a comma-decimal locale writes ';', quotes included.
        path = os.path.join(self.tmp, "excel.csv")
        with open(path, "w") as f:
            f.write("\ufeffDevEUI;TKMInfo;Serial\r\n")
            for i, row in enumerate(r):
                f.write(f"{row['devEUI']};{row['tkmInfo']};\"SN-{i}\"\r\n")
        p = self.ctl(d, "import", path, check=0)
        self.assertIn("3 of 3 rows: 3 issued", p.stdout)
        # File:line errors are kept with ';'.
        path = os.path.join(self.tmp, "excel-bad.csv")
        with open(path, "w") as f:
            f.write(f"devEUI;tkmInfo\n{r[0]['devEUI']};{r[0]['tkmInfo']}\nXYZ;{r[1]['tkmInfo']}\n")
        p = self.ctl(d, "import", path, check=1)
        self.assertIn(path + ":3: devEUI 'XYZ'", p.stderr)
        # Columns tpad does not know: refused, with the way out named; skipped on request.
        rows = random_rows(2, ("tkm",))
        path = os.path.join(self.tmp, "mes.csv")
        with open(path, "w") as f:
            f.write("devEUI,color,tkmInfo,batch\n")
            for row in rows:
                f.write(f"{row['devEUI']},red,{row['tkmInfo']},B7\n")
        p = self.ctl(d, "import", path, check=1)
        self.assertIn(path + ":1: unknown column 'color'", p.stderr)
        self.assertIn("--ignore-unknown-columns", p.stderr)
        p = self.ctl(d, "import", path, "--ignore-unknown-columns", check=0)
        self.assertIn("2 of 2 rows: 2 issued", p.stdout)
        self.assertIn("ignoring column 'color'", p.stderr)
        self.assertIn("ignoring column 'batch'", p.stderr)
        with d.admin_client() as c:
            dev = c.call("io.tpad.Admin.GetDevice", {"devEUI": rows[1]["devEUI"]})["device"]
        self.assertEqual(dev["tkmInfo"], rows[1]["tkmInfo"].upper())
        self.assertEqual(self.store_rows(d)["ISSUED"], 5)

    def test_failures_file_on_conflict(self):
        sim, d = self.start()
        rows = random_rows(4, ("tkm",))
        path = write_csv(os.path.join(self.tmp, "first.csv"), rows)
        self.ctl(d, "import", path, check=0)
        # The same DevEUIs with other TKM_INFO: conflicts, reported per line.
        rows2 = [dict(r, tkmInfo=secrets.token_hex(10)) for r in rows[:2]] + random_rows(1)
        path2 = write_csv(os.path.join(self.tmp, "second.csv"), rows2)
        p = self.ctl(d, "import", path2, "--generate-appkeys")
        self.assertEqual(p.returncode, 1)
        self.assertIn("3 rows: 1 issued, 0 skipped, 2 failed", p.stdout)
        fail_path = os.path.join(self.tmp, "second.failures.csv")
        self.assertIn(fail_path, p.stderr)
        with open(fail_path) as f:
            got = list(csv.DictReader(f))
        self.assertEqual([(g["line"], g["devEUI"]) for g in got],
                         [("2", rows[0]["devEUI"]), ("3", rows[1]["devEUI"])])
        self.assertTrue(all(g["reason"].startswith("conflict: ") for g in got))
        own = os.path.join(self.tmp, "own.csv")
        p = self.ctl(d, "import", path2, "--failures", own)
        self.assertEqual(p.returncode, 1)
        self.assertTrue(os.path.exists(own))
        # The input named as the failures file (by another path too): refused before any
        # row is sent, the input kept as it was.
        with open(path2) as f:
            before = f.read()
        os.symlink(path2, os.path.join(self.tmp, "link.csv"))
        for same in (path2, os.path.join(self.tmp, ".", "second.csv"),
                     os.path.join(self.tmp, "link.csv")):
            p = self.ctl(d, "import", path2, "--failures", same, check=2)
            self.assertIn(f"the failures file is {path2} itself", p.stderr)
            with open(path2) as f:
                self.assertEqual(f.read(), before)
        self.assertEqual(sim.counters()["duplicate_imports"], 0)

    def test_lookup_and_activate_with_cloud_down(self):
        sim, d = self.start()
        rows = random_rows(12, ("tkm", "gen"))
        path = write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        self.ctl(d, "import", path, "--generate-appkeys", check=0)
        sim.stop()
        se, nose = rows[0], rows[1]
        with d.station_client() as c:
            got = c.call("io.tpad.Station.Lookup", {"devEUI": se["devEUI"].lower(),
                                                    "qr": {"format": "png"}})
            self.assertEqual(got["device"]["source"], "stored")
            self.assertNotIn("appKey", got["device"])
            self.assertTrue(got["device"]["qrText"].startswith("LW:D0:"))
            self.assertTrue(got["qr"]["data"])
            got = c.call("io.tpad.Station.Lookup", {"devEUI": nose["devEUI"]})
            self.assertEqual(got["device"]["source"], "stored")
            self.assertRegex(got["device"]["appKey"], "^[0-9A-F]{32}$")
            key = got["device"]["appKey"]
            got = c.call("io.tpad.Station.Activate", {"devEUI": nose["devEUI"]})
            self.assertEqual(got["device"]["source"], "stored")
            self.assertEqual(got["device"]["appKey"], key)
            got = c.call("io.tpad.Station.Activate", {"devEUI": se["devEUI"]})
            self.assertEqual(got["device"]["state"], "ISSUED")
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Station.Lookup", {"devEUI": "00000000000000AA"})
            self.assertEqual(e.exception.error, "io.tpad.Station.NotFound")
        with d.admin_client() as c:
            # Audit rows are written with the store's next commit.
            info = wait_for(lambda: (lambda i: i if len(i["audit"]) == 3 else None)(
                c.call("io.tpad.Admin.GetDevice", {"devEUI": nose["devEUI"]})), 5, "audit")
            self.assertNotIn("appKey", info["device"])
            self.assertTrue(info["device"]["hasAppKey"])
            self.assertNotIn(key, json.dumps(info))
            methods = [(a["method"], a["outcome"]) for a in info["audit"]]
            self.assertEqual(methods, [("io.tpad.Admin.Import", "live"),
                                       ("io.tpad.Station.Lookup", "stored"),
                                       ("io.tpad.Station.Activate", "stored")])
            for a in info["audit"]:
                self.assertGreater(a["at"], 1600000000000)
                self.assertEqual(a["uid"], os.getuid())
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Admin.GetDevice", {"devEUI": "00000000000000AA"})
            self.assertEqual(e.exception.error, "io.tpad.Admin.NotFound")
        p = self.ctl(d, "device", nose["devEUI"], check=0)
        self.assertIn("io.tpad.Station.Lookup", p.stdout)
        self.assertIn("appKey      stored", p.stdout)
        self.assertNotIn(key, p.stdout)
        p = self.ctl(d, "device", "00000000000000AA")
        self.assertEqual(p.returncode, 1)
        self.assertIn("NotFound", p.stderr)

    def test_export_formats_and_zbar(self):
        sim, d = self.start()
        rows = random_rows(300)
        path = write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        self.ctl(d, "import", path, "--generate-appkeys", check=0)
        index = {}
        for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<svg"), ("zpl", b"^XA")):
            out = os.path.join(self.tmp, "labels", fmt)
            p = self.ctl(d, "export", "--format", fmt, "--out", out, check=0)
            self.assertIn(f"exported 300 {fmt} labels", p.stdout)
            files = sorted(os.listdir(out))
            self.assertEqual(len(files), 301)
            self.assertEqual(files[-1], "index.csv")
            self.assertEqual(sorted(f[:16] for f in files[:-1]),
                             sorted(r["devEUI"] for r in rows))
            with open(os.path.join(out, files[0]), "rb") as f:
                self.assertIn(magic, f.read(200))
            with open(os.path.join(out, "index.csv")) as f:
                got = list(csv.DictReader(f))
            self.assertEqual(len(got), 300)
            index[fmt] = {g["devEUI"]: g for g in got}
        self.assertEqual(index["png"], index["svg"])
        for r in rows[:10]:
            self.assertEqual(index["png"][r["devEUI"]]["serial"], r["serial"])
        out = os.path.join(self.tmp, "labels", "png")
        for eui in sorted(index["png"])[::60]:
            text = subprocess.run(["zbarimg", "--raw", "-q", os.path.join(out, eui + ".png")],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
            self.assertEqual(text, index["png"][eui]["qrText"])
        out = os.path.join(self.tmp, "labels", "csv")
        # An unfinished index an interrupted export left behind goes with the next export.
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "index.csv.tmp.4242"), "w").close()
        p = self.ctl(d, "export", "--format", "csv", "--out", out + "//", check=0)
        self.assertEqual(os.listdir(out), ["index.csv"])
        self.assertIn(f"index in {out}/index.csv", p.stdout)  # as given, less its slashes
        # Interrupted: its own unfinished index is removed, and it says so.
        cut = os.path.join(self.tmp, "labels", "svg2")
        proc = subprocess.Popen([tpadtest.TPACTL, "--socket", d.admin, "export", "--format",
                                 "svg", "--out", cut], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        wait_for(lambda: os.path.isdir(cut) and any(f.startswith("index.csv.tmp.")
                                                    for f in os.listdir(cut)), 10,
                 "the export under way")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        if proc.returncode != 0:  # else it had finished already
            self.assertIn("export interrupted", err)
            self.assertFalse([f for f in os.listdir(cut) if f.startswith("index.csv")])
        with open(os.path.join(out, "index.csv")) as f:
            self.assertEqual({g["devEUI"]: g for g in csv.DictReader(f)}, index["png"])
        # No AppKey anywhere in an export.
        keys = [r["appKey"].upper() for r in rows if r["appKey"]]
        with open(os.path.join(self.tmp, "labels", "svg", "index.csv")) as f:
            text = f.read()
        self.assertFalse(any(k in text for k in keys))
        p = self.ctl(d, "export", "--format", "png", "--state", "pending", "--out",
                     os.path.join(self.tmp, "none"), check=0)
        self.assertIn("exported 0 png labels", p.stdout)
        with d.admin_client() as c:
            replies = c.call_more("io.tpad.Admin.Export", {"format": "csv", "state": "ISSUED"})
            self.assertEqual(replies[-1]["summary"], {"exported": 300, "skipped": 0})
            self.assertNotIn("appKey", json.dumps(replies))

    def test_list_devices_paging_and_state(self):
        sim, d = self.start()
        rows = random_rows(57, ("gen", "key"))
        path = write_csv(os.path.join(self.tmp, "batch.csv"), rows)
        self.ctl(d, "import", path, "--generate-appkeys", check=0)
        # One FAILED device: an activation with the cloud gone.
        sim.stop()
        failed = "FFFFFFFFFFFFFF01"
        with d.station_client() as c:
            with self.assertRaises(VarlinkError):
                c.call("io.tpad.Station.Activate", {"devEUI": failed,
                                                    "tkmInfo": "00" * 10})
        with d.admin_client() as c:
            seen, after, pages = [], None, 0
            while True:
                params = {"limit": 10, "state": "issued"}
                if after:
                    params["after"] = after
                page = c.call("io.tpad.Admin.ListDevices", params)
                pages += 1
                self.assertLessEqual(len(page["devices"]), 10)
                seen += page["devices"]
                after = page.get("next")
                if not after:
                    break
            self.assertEqual(pages, 6)
            self.assertEqual([x["devEUI"] for x in seen], sorted(r["devEUI"] for r in rows))
            for x in seen:
                self.assertNotIn("appKey", x)
                self.assertTrue(x["hasAppKey"])
                self.assertEqual(x["state"], "ISSUED")
            self.assertNotIn("appKey", json.dumps(seen))
            page = c.call("io.tpad.Admin.ListDevices", {"state": "FAILED"})
            self.assertEqual([x["devEUI"] for x in page["devices"]], [failed])
            self.assertNotIn("ownerToken", page["devices"][0])
            self.assertIn("lastError", page["devices"][0])
            self.assertNotIn("next", page)
            everything = c.call("io.tpad.Admin.ListDevices", {"limit": 1000})["devices"]
            self.assertEqual(len(everything), 58)
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Admin.ListDevices", {"after": "not-an-eui"})
            self.assertEqual(e.exception.params["parameter"], "after")
        p = self.ctl(d, "devices", check=0)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("DEVEUI"))
        self.assertEqual(len(lines), 59)
        p = self.ctl(d, "devices", "--state", "failed", check=0)
        self.assertIn(failed, p.stdout)
        self.assertEqual(len(p.stdout.splitlines()), 2)
        p = self.ctl(d, "devices", "--limit", "5", check=0)
        self.assertEqual(len(p.stdout.splitlines()), 6)
        p = self.ctl(d, "--json", "devices", "--limit", "1500", check=0)
        self.assertEqual(sum(len(json.loads(l)["devices"]) for l in p.stdout.splitlines()), 58)


class SqliteReads(TpadTestCase):
    """On SQLite the store's reads run on a reader thread: a store that cannot be read
    for a while holds up the calls that read it, never the loop."""

    def test_a_locked_store_never_stalls_the_loop(self):
        psk = secrets.token_hex(16)
        sim = self.sim(psk).start()
        d = self.daemon(upstream_url=sim.url(), psk_hex=psk).start()
        devs = [f"70B3D5000000{k:04X}" for k in range(3)]
        for e in devs:
            with d.station_client() as c:
                c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": "3111" + e})
        # Another process holds every WAL read lock (bytes 123-127 of the -shm file, as a
        # checkpoint resetting the WAL does): a read of tpad's waits in SQLite's retries.
        shm = os.open(d.store + "-shm", os.O_RDWR)

        def take():
            try:
                fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 123, os.SEEK_SET)
                return True
            except OSError:
                return False  # a read of tpad's is running: try again
        results = {}
        try:
            wait_for(take, 5, "the WAL read locks")

            def call(name, sock, method, params):
                try:
                    with sock(timeout=60) as c:
                        results[name] = c.call(method, params)
                except VarlinkError as err:
                    results[name] = err.error

            calls = [(f"get{k}", d.admin_client, "io.tpad.Admin.GetDevice", {"devEUI": e})
                     for k, e in enumerate(devs)]
            # Lookups with a label: nothing of it is read on the loop either.
            calls += [(f"lookup{k}", d.station_client, "io.tpad.Station.Lookup",
                       {"devEUI": e, "qr": {"format": "png"}}) for k, e in enumerate(devs)]
            calls.append(("list", d.admin_client, "io.tpad.Admin.ListDevices", {}))
            ts = [threading.Thread(target=call, args=c) for c in calls]
            for t in ts:
                t.start()
            time.sleep(0.2)
            # The reads wait; the loop answers all along, on both sockets.
            worst, end = 0.0, time.monotonic() + 1.5
            while time.monotonic() < end:
                for client in (d.station_client, d.admin_client):
                    t0 = time.monotonic()
                    with client(timeout=10) as c:
                        c.call("org.varlink.service.GetInfo")
                    worst = max(worst, time.monotonic() - t0)
            self.assertLess(worst, 0.5)
            self.assertEqual(results, {})  # every read still waits
        finally:
            os.close(shm)  # releases the locks
        for t in ts:
            t.join(60)
        # Each call got its answer, the device or StoreFailed; now every read works.
        self.assertEqual(len(results), len(calls), results)
        for name, r in results.items():
            self.assertTrue(isinstance(r, dict) or r.endswith(".StoreFailed"), (name, r))
        with d.station_client() as c:
            self.assertEqual(c.call("io.tpad.Station.Lookup", {"devEUI": devs[0]})
                             ["device"]["devEUI"], devs[0])


if __name__ == "__main__":
    tpadtest.main()
