"""tpas's disk-full test body, run by test_tpas.py inside a private mount namespace.

Puts tpas's store on a 2 MiB tmpfs, fills it, and checks: an uplink is answered 503 (the
LRC retries it) and a downlink StoreFailed, both naming the full disk; nothing is sent to
the LRC; tpas keeps serving; once space is freed the LRC's retry is journaled once and the
downlink counter goes on where it was; started on a full disk, tpas names it. Exit 0 pass,
1 fail, 77 skip.
"""

import os
import subprocess
import sys

import tpadtest
from test_tpas import DEV, TPACTL, TPAS, TUNNEL_KEY, Tpas  # puts lrc-sim on the path
from tpadtest import Client, VarlinkError
from lrc_sim import LrcSim, encrypt_astk  # noqa: E402


def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


def downlink(t, payload):
    with Client(t.apps, 15) as c:
        return c.call("io.tpad.AS.SendDownlink", {"devEUI": DEV, "fPort": 2, "payload": payload})


def main():
    tmp = sys.argv[1]
    disk = os.path.join(tmp, "disk")
    os.makedirs(disk, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", disk]).returncode:
        print("cannot mount a tmpfs here")
        return 77
    rsa = os.path.join(tmp, "as-rsa.pem")
    pub = subprocess.run([TPACTL, "as", "keygen", "--out", rsa], capture_output=True,
                         text=True, check=True).stdout
    s = LrcSim(os.path.join(tmp, "lrc.json"), TUNNEL_KEY, as_id="tpas-test")
    s.port = s.start()
    t = Tpas(disk, rsa, lrc_url=f"http://127.0.0.1:{s.port}")
    try:
        t.start()
        s.as_url = t.url
        astk = os.urandom(16)
        t.tpactl("as", "import-astk", encrypt_astk(pub, astk), check=0)
        s.add_device(DEV, astk)
        assert s.uplink(DEV, b"one")[0] == 200
        assert downlink(t, "01")["fCntDn"] == 0
        filler = os.path.join(disk, "filler")
        fill(filler)
        status, ans = s.uplink(DEV, b"two")
        assert status == 503, (status, ans)
        assert "No space left on device" in ans["error"], ans
        try:
            downlink(t, "02")
            raise AssertionError("a downlink went out with the disk full")
        except VarlinkError as e:
            assert e.error == "io.tpad.AS.StoreFailed", e
            assert "No space left on device" in e.params["reason"], e.params
        assert len(s.state["downlinks"]) == 1, s.state["downlinks"]
        assert t.status()["tunnel"]["storeFailed"] == 1
        os.unlink(filler)
        # The LRC retries the same uplink: journaled once, in order.
        status, ans = s.uplink(DEV, b"two")
        assert status == 200 and ans["seq"] == 2, (status, ans)
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
        subprocess.run(["umount", disk])


if __name__ == "__main__":
    sys.exit(main())
