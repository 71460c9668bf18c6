"""Disk-full test body, run by test_activation.py inside a private mount namespace.

Puts the store on a 2 MiB tmpfs, fills it, and checks: StoreFailed, the daemon keeps
serving, nothing half-written, and activation works again once space is freed; started on
a full disk, tpad names it.
Exit 0 pass, 1 fail, 77 skip.
"""

import json
import os
import secrets
import subprocess
import sys

import tpadtest
from tpadtest import Daemon, Sim, VarlinkError, fill, small_disk, wait_for

TKM = "31110123D345666E2DBD"


def main():
    tmp = sys.argv[1]
    disk = small_disk(tmp)
    if not disk:
        print("cannot mount a tmpfs here")
        return 77
    psk = secrets.token_hex(16)
    simdir = os.path.join(tmp, "simfs")
    os.makedirs(simdir, exist_ok=True)
    sim = Sim(simdir, psk, registry=False).start()
    d = Daemon(tmp, upstream_url=sim.url(), psk_hex=psk)
    d.store = os.path.join(disk, "tpad.db")
    d.write_conf()
    d.start()
    try:
        def ready():
            with d.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["upstream"]["state"] == "ok"
        wait_for(ready, 15, "upstream")

        def act(e):
            with d.station_client() as c:
                return c.call("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": TKM})

        act("0000000000000001")
        filler = os.path.join(disk, "filler")
        fill(filler)
        failures = 0
        for i in range(2, 40):
            try:
                act(f"{i:016X}")
            except VarlinkError as e:
                assert e.error == "io.tpad.Station.StoreFailed", e
                assert e.params["reason"], e
                failures += 1
        assert failures > 0, "no StoreFailed with a full disk"
        # tpactl status says so, with its exit status for a failing store.
        p = d.tpactl("--socket", d.admin, "status", check=6)
        assert "last error" in p.stdout and "failing" in p.stdout, p.stdout
        with d.station_client() as c:
            c.call("org.varlink.service.GetInfo")
        os.unlink(filler)
        # Healed: every device activates, none twice at the cloud.
        for i in range(1, 40):
            dev = act(f"{i:016X}")["device"]
            assert dev["state"] == "ISSUED"
        # Commits again: no longer failing, and status says healthy (the last error stays).
        p = d.tpactl("--socket", d.admin, "status", "--json", check=0)
        st = json.loads(p.stdout)["store"]
        assert st["failing"] is False and st["lastError"], st
        c = sim.counters()
        assert c["duplicate_imports"] == 0, c
        assert c["imports"] == 39, c
        with d.admin_client() as a:
            rows = a.call("io.tpad.Admin.Status")["store"]["rows"]
        assert rows["ISSUED"] == 39 and rows["PENDING"] == 0, rows
        assert d.stop() == 0
        # Started on a full disk, tpad cannot open the store and says why.
        fill(filler)
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "No space left on device" in p.stderr, p.stderr
        print(f"ok: {failures} StoreFailed while full, recovered")
        return 0
    except AssertionError as e:
        print("FAIL:", e)
        print(d.log_text())
        return 1
    finally:
        if d.proc:
            d.kill()
        sim.stop()
        subprocess.run(["umount", disk])


if __name__ == "__main__":
    sys.exit(main())
