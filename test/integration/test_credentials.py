"""Secrets encrypted at rest with systemd-creds, the way tpad(8) documents it."""

import os
import shutil
import subprocess

import tpadtest
from tpadtest import TpadTestCase


class EncryptedCredentials(TpadTestCase):
    def test_systemd_creds(self):
        if os.getuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private /var/lib/systemd")
        self.assertTrue(shutil.which("systemd-creds"), "systemd-creds is missing")
        inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "creds_inner.py")
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "python3", inner,
                            self.tmp], capture_output=True, text=True, timeout=120)
        if p.returncode == 77:
            self.skipTest(p.stdout.strip())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("ok:", p.stdout)

    def test_drop_in_example(self):
        """The shipped drop-in resets the plain credentials and loads the encrypted ones."""
        path = os.path.join(tpadtest.SRC_ROOT, "systemd", "tpad-encrypted-credentials.conf")
        with open(path) as f:
            lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(lines[0], "[Service]")
        self.assertEqual(lines[1], "LoadCredential=")
        names = {l.split("=", 1)[1].split(":")[0] for l in lines
                 if l.startswith("LoadCredentialEncrypted=")}
        self.assertEqual(names, {"tpa-psk", "store-key"})


if __name__ == "__main__":
    tpadtest.main()
