"""Encrypted credentials test body, run by test_credentials.py in a private mount namespace
(a fresh /var/lib/systemd, so the host's credential secret is neither used nor created).

Encrypts the PSK and the store key with systemd-creds as an admin would, decrypts them
into a credentials directory the way systemd does for LoadCredentialEncrypted=, and runs
tpad on them alone. Exit 0 pass, 1 fail, 77 skip.
"""

import os
import secrets
import subprocess
import sys

from tpadtest import Daemon, Sim, wait_for

TKM = "31110123D345666E2DBD"


def creds(*args, **kw):
    return subprocess.run(["systemd-creds", *args], capture_output=True, timeout=30, **kw)


def main():
    tmp = sys.argv[1]
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/lib/systemd"]).returncode:
        print("cannot mount a tmpfs on /var/lib/systemd here")
        return 77
    try:
        psk, key = secrets.token_hex(16), secrets.token_hex(32)
        store = os.path.join(tmp, "credstore")
        os.makedirs(store, mode=0o700)
        # What the admin runs once on the line PC (the plain text only on a pipe).
        for name, value in (("tpa-psk", psk), ("store-key", key)):
            p = creds("encrypt", f"--name={name}", "--with-key=host", "-",
                      os.path.join(store, name + ".cred"), input=value.encode())
            assert p.returncode == 0, p.stderr.decode()
        for name, value in (("tpa-psk", psk), ("store-key", key)):
            with open(os.path.join(store, name + ".cred"), "rb") as f:
                blob = f.read()
            assert value.encode() not in blob and bytes.fromhex(value) not in blob, name
        # Bound to its name: decrypting as another credential fails, and so does a
        # tampered file.
        p = creds("decrypt", "--name=store-key", os.path.join(store, "tpa-psk.cred"), "-")
        assert p.returncode != 0, "a credential decrypted under another name"
        with open(os.path.join(store, "store-key.cred"), "rb") as f:
            blob = bytearray(f.read())
        blob[len(blob) // 2] ^= 1
        bad = os.path.join(tmp, "tampered.cred")
        with open(bad, "wb") as f:
            f.write(blob)
        assert creds("decrypt", "--name=store-key", bad, "-").returncode != 0, "tampered"

        # What systemd does at service start for LoadCredentialEncrypted=: a private
        # directory with one read-only plain file per credential.
        credir = os.path.join(tmp, "credentials")
        os.makedirs(credir, mode=0o700)
        for name in ("tpa-psk", "store-key"):
            out = os.path.join(credir, name)
            p = creds("decrypt", f"--name={name}", os.path.join(store, name + ".cred"), out)
            assert p.returncode == 0, p.stderr.decode()
            os.chmod(out, 0o400)
        simdir = os.path.join(tmp, "sim")
        os.makedirs(simdir)
        sim = Sim(simdir, psk).start()
        dd = os.path.join(tmp, "tpad")
        os.makedirs(dd)
        # No key files in the configuration: only the credentials directory.
        d = Daemon(dd, upstream_url=sim.url(), psk_hex=secrets.token_hex(16),
                   conf_extra="upstream.psk-file =\nstore.key-file =",
                   env={"CREDENTIALS_DIRECTORY": credir})
        os.unlink(d.psk_file)
        os.unlink(d.key_file)
        try:
            d.start()
            wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15,
                     "sessions with the PSK from the encrypted credential")
            with d.station_client() as c:
                dev = c.call("io.tpad.Station.Activate",
                             {"devEUI": "0123456789ABCDEF", "generateAppKey": True})["device"]
            assert dev["state"] == "ISSUED" and dev["appKey"], dev
            assert d.stop() == 0
            # The store is sealed with that key: the same credentials open it again.
            d.start()
            with d.station_client() as c:
                again = c.call("io.tpad.Station.Lookup", {"devEUI": "0123456789ABCDEF"})["device"]
            assert again["appKey"] == dev["appKey"], (again, dev)
            text = d.log_text()
            assert psk not in text and key not in text, "a secret in the log"
            assert d.stop() == 0
        finally:
            if d.proc and d.proc.poll() is None:
                d.kill()
            sim.stop()
        print("ok: tpad ran on systemd-creds encrypted credentials")
        return 0
    except AssertionError as e:
        print("FAIL:", e)
        return 1
    finally:
        subprocess.run(["umount", "-l", "/var/lib/systemd"])


if __name__ == "__main__":
    sys.exit(main())
