"""Journal test body, run by test_journal.py in a private mount namespace.

/run is a fresh tmpfs holding a datagram socket at /run/systemd/journal/socket, where
libsystemd's sd_journal_send() writes; tpad's stderr is a file named in JOURNAL_STREAM,
as systemd does for a service. The records are read back in the journal's native
protocol. Exit 0 pass, 1 fail, 77 skip.
"""

import os
import secrets
import socket
import struct
import subprocess
import sys
import time

import tpadtest
from tpadtest import Daemon, Sim, free_port, wait_for

TKM = "31110123D345666E2DBD"


def parse(datagram):
    """One native-protocol record: KEY=value lines, or KEY\\n<le64 size><bytes>\\n."""
    out, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            size = struct.unpack("<Q", datagram[nl + 1:nl + 9])[0]
            out[line.decode()] = datagram[nl + 9:nl + 9 + size].decode(errors="replace")
            i = nl + 9 + size + 1
    return out


def main():
    tmp = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "tpas":
        return main_tpas(tmp)
    j = journal_socket()
    if not j:
        print("cannot mount a tmpfs on /run here")
        return 77
    find, records = j

    psk = secrets.token_hex(16)
    port = free_port()
    dd = os.path.join(tmp, "tpad")
    os.makedirs(dd)
    log = os.path.join(dd, "tpad.log")
    open(log, "ab").close()
    st = os.stat(log)
    d = Daemon(dd, upstream_url=f"https://127.0.0.1:{port}", psk_hex=psk,
               conf_extra="upstream.sessions = 1\nupstream.breaker-threshold = 2\n"
                          "upstream.breaker-cooldown = 300ms",
               env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    sim = None
    try:
        d.start()
        # No cloud yet: the breaker opens.
        wait_for(lambda: find(MESSAGE_ID=tpadtest_id("BREAKER_OPEN")), 20, "BREAKER_OPEN")
        r = find(MESSAGE_ID=tpadtest_id("BREAKER_OPEN"))[0]
        assert r["PRIORITY"] == "4", r
        assert r["UPSTREAM_URL"] == f"https://127.0.0.1:{port}", r
        # The cloud appears: the breaker closes.
        simdir = os.path.join(tmp, "sim")
        os.makedirs(simdir)
        sim = Sim(simdir, psk).start(port=port)
        wait_for(lambda: find(MESSAGE_ID=tpadtest_id("BREAKER_CLOSE")), 30, "BREAKER_CLOSE")
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 20, "ready")
        # An activation and a lookup, with their fields.
        with d.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": "0123456789ABCDEF", "tkmInfo": TKM})
            c.call("io.tpad.Station.Lookup", {"devEUI": "0123456789ABCDEF"})
        wait_for(lambda: find(MESSAGE_ID=tpadtest_id("LOOKUP")), 5, "LOOKUP")
        a = find(MESSAGE_ID=tpadtest_id("ACTIVATION"), DEVEUI="0123456789ABCDEF")
        assert a and a[0]["OUTCOME"] == "ok" and a[0]["SOURCE"] == "live", a
        assert a[0]["STATION_UID"] == str(os.getuid()), a[0]
        assert a[0]["STATION_PID"] == str(os.getpid()), a[0]
        assert float(a[0]["LATENCY_MS"]) >= 0 and a[0]["MESSAGE"].startswith("Activate "), a[0]
        lk = find(MESSAGE_ID=tpadtest_id("LOOKUP"))[0]
        assert lk["SOURCE"] == "stored" and lk["DEVEUI"] == "0123456789ABCDEF", lk
        # An import: start and end; a backup.
        csv = os.path.join(tmp, "rows.csv")
        with open(csv, "w") as f:
            f.write("devEUI,tkmInfo\n")
            for i in range(3):
                f.write(f"00FF{i:012X},{TKM}\n")
        d.tpactl("--socket", d.admin, "import", csv, check=0)
        d.tpactl("--socket", d.admin, "backup", os.path.join(tmp, "copy.db"), check=0)
        wait_for(lambda: find(MESSAGE_ID=tpadtest_id("BACKUP")), 5, "BACKUP")
        s = find(MESSAGE_ID=tpadtest_id("IMPORT_START"))
        e = find(MESSAGE_ID=tpadtest_id("IMPORT_END"))
        assert len(s) == 1 and s[0]["ADMIN_UID"] == str(os.getuid()), s
        assert len(e) == 1 and e[0]["ROWS"] == "3" and e[0]["ISSUED"] == "3", e
        b = find(MESSAGE_ID=tpadtest_id("BACKUP"))[0]
        assert b["OUTCOME"] == "ok" and b["BACKUP_PATH"].endswith("copy.db"), b
        # Every MESSAGE_ID record has a MESSAGE and a PRIORITY; plain text went nowhere.
        for r in records:
            if "MESSAGE_ID" in r:
                assert r.get("MESSAGE") and r.get("PRIORITY"), r
        with open(log) as f:
            text = f.read()
        assert "DEVEUI=0123456789ABCDEF" not in text, text
        assert d.stop() == 0
        ids = sorted({r["MESSAGE_ID"] for r in records if "MESSAGE_ID" in r})
        print(f"ok: {len(records)} journal records, {len(ids)} MESSAGE_IDs")
        return 0
    except AssertionError as e:
        print("FAIL:", e)
        print(d.log_text())
        return 1
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
        if sim:
            sim.stop()
        subprocess.run(["umount", "-l", "/run"])


def journal_socket():
    """A private /run with the journal's socket: (find, records), or None if no tmpfs."""
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"]).returncode:
        return None
    os.makedirs("/run/systemd/journal")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("/run/systemd/journal/socket")
    rx.settimeout(0.2)
    records = []

    def find(**want):
        while True:
            try:
                records.append(parse(rx.recv(1 << 20)))
            except socket.timeout:
                break
        return [r for r in records if all(r.get(k) == v for k, v in want.items())]
    return find, records


def main_tpas(tmp):
    """tpas's events: an ASTK imported, a new session key, a refused request (by the
    tunnel and by its HTTP server), a downlink that fails, a webhook that fails."""
    sys.path.insert(0, os.path.join(tpadtest.SRC_ROOT, "test", "lrc-sim"))
    import test_tpas
    from lrc_sim import LrcSim, encrypt_astk
    j = journal_socket()
    if not j:
        print("cannot mount a tmpfs on /run here")
        return 77
    find, records = j
    d = os.path.join(tmp, "tpas")
    os.makedirs(d)
    rsa = os.path.join(d, "rsa.pem")
    pub = subprocess.run([tpadtest.TPACTL, "as", "keygen", "--out", rsa], capture_output=True,
                         text=True, check=True).stdout
    t = test_tpas.Tpas(d, rsa, lrc_url=f"http://127.0.0.1:{free_port()}",
                       extra=f"[webhook]\nurl = http://127.0.0.1:{free_port()}/hook\n")
    log = t.log_path
    open(log, "ab").close()
    st = os.stat(log)
    t.env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    dev = test_tpas.DEV
    try:
        t.start()
        astk = os.urandom(16)
        t.tpactl("as", "import-astk", encrypt_astk(pub, astk), "--customer-id", "100122002",
                 check=0)
        sim = LrcSim(os.path.join(tmp, "lrc.json"), test_tpas.TUNNEL_KEY, as_url=t.url,
                     as_id="tpas-test")
        sim.add_device(dev, astk)
        assert sim.uplink(dev, b"hello")[0] == 200
        assert sim.uplink(dev, b"bad", key="00" * 16)[0] == 401
        c = socket.create_connection(("127.0.0.1", t.port))
        c.sendall(b"not HTTP\r\n\r\n")
        c.recv(4096)
        c.close()
        t.tpactl("as", "send", "--dev-eui", dev, "--port", "2", "--payload", "00")
        wait_for(lambda: find(MESSAGE_ID=events_id("WEBHOOK_FAILED")), 20, "WEBHOOK_FAILED")
        a = find(MESSAGE_ID=events_id("ASTK"))
        assert len(a) == 1 and a[0]["CUSTOMER_ID"] == "100122002" and a[0]["ASTK_ID"] == "1", a
        s = find(MESSAGE_ID=events_id("SESSION"))
        assert len(s) == 1 and s[0]["DEVEUI"] == dev, s
        r = find(MESSAGE_ID=events_id("REFUSED"), STATUS="401")
        assert len(r) == 1 and r[0]["DEVEUI"] == dev and r[0]["REASON"] == "bad Token", r
        r = find(MESSAGE_ID=events_id("REFUSED"), STATUS="400")
        assert len(r) == 1 and r[0]["PEER"].startswith("127.0.0.1 port "), r
        dl = find(MESSAGE_ID=events_id("DOWNLINK"))
        assert len(dl) == 1 and dl[0]["OUTCOME"] == "failed" and dl[0]["FCNTDN"] == "0", dl
        assert dl[0]["PRIORITY"] == "4", dl
        w = find(MESSAGE_ID=events_id("WEBHOOK_FAILED"))[0]
        assert w["WEBHOOK_URL"].endswith("/hook") and int(w["RETRY_MS"]) > 0, w
        text = " ".join(r.get("MESSAGE", "") + " " + " ".join(r.values()) for r in records)
        assert astk.hex() not in text.lower() and test_tpas.TUNNEL_KEY not in text.lower()
        with open(log) as f:
            assert "MESSAGE_ID" not in f.read()
        assert t.stop() == 0
        print(f"ok: {len(records)} journal records")
        return 0
    except AssertionError as e:
        print("FAIL:", e)
        print(t.log_text())
        return 1
    finally:
        if t.proc and t.proc.poll() is None:
            t.kill9()
        subprocess.run(["umount", "-l", "/run"])


def events_id(name):
    """The MESSAGE_ID of a tpas event, read from tpas/events.h."""
    with open(os.path.join(tpadtest.SRC_ROOT, "tpas", "events.h")) as f:
        for line in f:
            if line.startswith(f"#define LOG_ID_AS_{name} "):
                return line.split('"')[1]
    raise AssertionError(f"no LOG_ID_AS_{name}")


def tpadtest_id(name):
    """The MESSAGE_ID of an event, read from core/log.h (the one list)."""
    with open(os.path.join(tpadtest.SRC_ROOT, "core", "log.h")) as f:
        for line in f:
            if line.startswith(f"#define LOG_ID_{name} "):
                return line.split('"')[1]
    raise AssertionError(f"no LOG_ID_{name}")


if __name__ == "__main__":
    sys.exit(main())
