"""tpas's disk-full test body, run by test_tpas.py inside a private mount namespace.

Puts tpas's store on a 2 MiB tmpfs, fills it, and checks: an uplink is answered 503 (the
LRC retries it) and a downlink StoreFailed, both naming the full disk; nothing is sent to
the LRC; tpas keeps serving; Status (journal.failing, failingSince, lastError), tpactl as
status (exit 6), STATUS= and /metrics (tpas_journal_failing) say the journal is failing
while it is, and stop once a write commits again; once space is freed the LRC's retry is
journaled once and the downlink counter goes on where it was; started on a full disk,
tpas names it. Exit 0 pass, 1 fail, 77 skip.
"""

import os
import socket
import subprocess
import sys

import tpadtest
from test_tpas import DEV, TPACTL, TPAS, TUNNEL_KEY, Tpas  # puts lrc-sim on the path
from test_metrics import http_get, parse
from tpadtest import Client, VarlinkError, fill, free_port, small_disk, wait_for
from lrc_sim import LrcSim, encrypt_astk  # noqa: E402


def downlink(t, payload):
    with Client(t.apps, 15) as c:
        return c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": payload})


class Health:
    """What an operator sees of tpas: Status's journal, tpactl as status, the last STATUS=
    sent to the notify socket, and /metrics."""

    def __init__(self, t, mport, notify):
        self.t, self.mport, self.notify, self.last_status = t, mport, notify, ""

    def status_line(self):
        """The newest STATUS= tpas sent (it sends one a second)."""
        while True:
            try:
                msg = self.notify.recv(4096).decode()
            except BlockingIOError:
                return self.last_status
            for ln in msg.split("\n"):
                if ln.startswith("STATUS="):
                    self.last_status = ln

    def metrics(self):
        st, _, text = http_get(f"http://127.0.0.1:{self.mport}/metrics")
        assert st == 200, st
        return parse(text, openmetrics=False)[1]

    def check(self, failing):
        j = self.t.status()["journal"]
        assert j["failing"] is failing, j
        assert (j["failingSince"] is not None) is failing, j
        p = self.t.tpactl("as", "status")
        assert p.returncode == (6 if failing else 0), (p.returncode, p.stdout, p.stderr)
        assert ("journal: FAILING since " in p.stdout) is failing, p.stdout
        v = self.metrics()
        assert v["tpas_journal_failing"] == (1 if failing else 0), v["tpas_journal_failing"]
        assert v["tpas_journal_failed_commits_total"] == j["failedCommits"], v
        # STATUS= is sent once a second: the next one says it.
        wait_for(lambda: ("journal FAILING" in self.status_line()) is failing, 5,
                 f"STATUS= {'with' if failing else 'without'} journal FAILING")
        return j, p.stdout


def main():
    tmp = sys.argv[1]
    disk = small_disk(tmp)
    if not disk:
        print("cannot mount a tmpfs here")
        return 77
    rsa = os.path.join(tmp, "as-rsa.pem")
    pub = subprocess.run([TPACTL, "as", "keygen", "--out", rsa], capture_output=True,
                         text=True, check=True).stdout
    s = LrcSim(os.path.join(tmp, "lrc.json"), TUNNEL_KEY, as_id="tpas-test")
    s.port = s.start()
    mport = free_port()
    t = Tpas(disk, rsa, lrc_url=f"http://127.0.0.1:{s.port}",
             extra=f"[metrics]\nlisten = 127.0.0.1:{mport}\n")
    # The notify socket outside the small disk, read as systemd would.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(tmp, "notify.sock"))
    notify.setblocking(False)
    t.env["NOTIFY_SOCKET"] = os.path.join(tmp, "notify.sock")
    health = Health(t, mport, notify)
    try:
        t.start()
        s.as_url = t.url
        astk = os.urandom(16)
        t.tpactl("as", "import-astk", encrypt_astk(pub, astk), check=0)
        s.add_device(DEV, astk)
        assert s.uplink(DEV, b"one")[0] == 200
        assert downlink(t, "01")["fCntDn"] == 0
        j, _ = health.check(failing=False)
        assert j["lastError"] is None and j["failedCommits"] == 0, j
        filler = os.path.join(disk, "filler")
        fill(filler)
        status, ans = s.uplink(DEV, b"two")
        assert status == 503, (status, ans)
        assert "No space left on device" in ans["error"], ans
        # The journal is failing now, and every view says so.
        j, text = health.check(failing=True)
        assert j["lastError"] == "cannot commit uplinks: No space left on device", j
        assert j["failedCommits"] >= 1, j
        assert "No space left on device" in text, text
        assert "No space left on device" in health.status_line(), health.status_line()
        try:
            downlink(t, "02")
            raise AssertionError("a downlink went out with the disk full")
        except VarlinkError as e:
            assert e.error == "io.tpad.AS.StoreFailed", e
            assert "No space left on device" in e.params["reason"], e.params
        assert len(s.state["downlinks"]) == 1, s.state["downlinks"]
        assert t.status()["tunnel"]["storeFailed"] == 1
        j, _ = health.check(failing=True)
        assert "the downlink counter: No space left on device" in j["lastError"], j
        since = j["failingSince"]
        os.unlink(filler)
        # Space freed, but nothing written yet: still failing, since the first failure.
        assert health.check(failing=True)[0]["failingSince"] == since
        # The LRC retries the same uplink: journaled once, in order.
        status, ans = s.uplink(DEV, b"two")
        assert status == 200 and ans["seq"] == 2, (status, ans)
        # That commit ends the failing; the last error stays, as healed.
        j, text = health.check(failing=False)
        assert "No space left on device" in j["lastError"], j
        assert "journal: earlier error (healed since): " in text, text
        assert [u["seq"] for u in t.uplinks()] == [1, 2]
        # No counter was spent on the refused downlink.
        assert downlink(t, "03")["fCntDn"] == 1
        assert t.stop() == 0
        r = tpadtest.sanitizer_report(t.log_path)
        assert not r, r
        # Started on a full disk, tpas cannot open the store and says why.
        fill(filler)
        p = subprocess.run([TPAS, "--config", t.conf], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "No space left on device" in p.stderr, p.stderr
        print("ok: 503 and StoreFailed while full, recovered")
        return 0
    except (AssertionError, VarlinkError) as e:
        print("FAIL:", repr(e))
        print(t.log_text())
        return 1
    finally:
        if t.proc:
            t.kill9()
        s.stop()
        notify.close()
        subprocess.run(["umount", disk])


if __name__ == "__main__":
    sys.exit(main())
