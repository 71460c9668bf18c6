"""journald: every event of interest with its MESSAGE_ID and fields when stderr is the
journal; plain text otherwise. MESSAGE_IDs listed in tpad(8) match core/log.h, those in
tpas(8) tpas/events.h."""

import os
import re
import secrets
import shutil
import subprocess

import tpadtest
from tpadtest import TpadTestCase, wait_for

TKM = "31110123D345666E2DBD"


class Journal(TpadTestCase):
    def inner(self, *args):
        if os.getuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private /run")
        inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "journal_inner.py")
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "python3", inner,
                            self.tmp, *args], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ))
        if p.returncode == 77:
            self.skipTest(p.stdout.strip())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_events_to_the_journal(self):
        self.inner()

    def test_tpas_events_to_the_journal(self):
        self.inner("tpas")

    def test_plain_text_otherwise(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk).start()
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15, "ready")
        with d.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": "0123456789ABCDEF", "tkmInfo": TKM})
        d.tpactl("--socket", d.admin, "backup", os.path.join(self.tmp, "c.db"), check=0)
        text = d.log_text()
        self.assertRegex(text, r"<6>Activate DEVEUI=0123456789ABCDEF "
                         r"METHOD=io.tpad.Station.Activate OUTCOME=ok SOURCE=live "
                         r"STATION_UID=\d+ STATION_PID=\d+")
        self.assertRegex(text, r"<5>store backed up to .* BACKUP_PATH=.* OUTCOME=ok BYTES=\d+")
        self.assertNotIn("MESSAGE_ID", text)

    def test_ids_listed_in_tpad_8(self):
        with open(os.path.join(tpadtest.SRC_ROOT, "core", "log.h")) as f:
            ids = dict(re.findall(r'#define LOG_ID_(\w+) "([0-9a-f]{32})"', f.read()))
        self.assertGreaterEqual(len(ids), 10)
        self.assertEqual(len(set(ids.values())), len(ids))
        with open(os.path.join(tpadtest.SRC_ROOT, "man", "tpad.8")) as f:
            man = f.read()
        for name, mid in ids.items():
            self.assertIn(mid, man, name)

    def test_ids_listed_in_tpas_8(self):
        with open(os.path.join(tpadtest.SRC_ROOT, "tpas", "events.h")) as f:
            ids = dict(re.findall(r'#define LOG_ID_(\w+) "([0-9a-f]{32})"', f.read()))
        self.assertGreaterEqual(len(ids), 6)
        with open(os.path.join(tpadtest.SRC_ROOT, "core", "log.h")) as f:
            tpad_ids = set(re.findall(r'"([0-9a-f]{32})"', f.read()))
        self.assertEqual(len(set(ids.values()) | tpad_ids), len(ids) + len(tpad_ids))
        with open(os.path.join(tpadtest.SRC_ROOT, "man", "tpas.8")) as f:
            man = f.read()
        for name, mid in ids.items():
            self.assertIn(mid, man, name)


if __name__ == "__main__":
    tpadtest.main()
