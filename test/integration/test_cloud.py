"""Integration tests of reaching the real cloud: certificate TLS (good chain, expired, wrong
host, unknown CA, pin mismatch, mTLS) through the real tpad against tpa-sim and OpenSSL."""

import os
import secrets
import signal
import socket
import subprocess
import time

import json
import stat

import certs
import tpadtest
from certs import PKI
from tpadtest import TpadTestCase, wait_for

SANS = ["DNS:127.0.0.1", "IP:127.0.0.1"]


class CertBase(TpadTestCase):
    def setUp(self):
        super().setUp()
        self.pki = PKI(os.path.join(self.tmp, "pki"))
        self.pki.ca("good")

    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")["upstream"]

    def cert_sim(self, crt, key, client_ca=None, extra=()):
        args = ["--cert", crt, "--key", key]
        if client_ca:
            args += ["--client-ca", client_ca]
        return self.sim(None, tls_args=args, extra=extra).start()

    def cert_daemon(self, url, conf="", sessions=2, **kw):
        return self.daemon(upstream_url=url, conf_extra=(
            "upstream.tls = cert\nupstream.auth = none\n"
            f"upstream.ca-file = {self.pki.path('good.crt')}\n"
            f"upstream.sessions = {sessions}\n" + conf), **kw)

    def activate(self, d, eui="70B3D50000000001"):
        with d.station_client() as c:
            return c.call("io.tpad.Station.Activate",
                          {"devEUI": eui, "tkmInfo": "31110123D345666E2DBD"})


class CertTLS(CertBase):
    def test_good_chain_warm_and_resumed(self):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        s = self.cert_sim(crt, key)
        d = self.cert_daemon(s.url()).start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "warm certificate sessions")
        up = self.status(d)
        self.assertEqual(up["tls"], "cert")
        self.assertIsNone(up["certificate"])
        for sess in up["sessions"]:
            self.assertIn("TLS-ECDHE-ECDSA-WITH-", sess["ciphersuite"])
        dev = self.activate(d)
        self.assertEqual(dev["device"]["state"], "ISSUED")
        self.assertEqual(s.counters()["imports"], 1)
        d.wait_notify("upstream ok 2/2 ready", 15)
        # A dropped connection comes back by resuming the verified session.
        s.faults(reset_after=1)
        self.activate(d, "70B3D50000000002")
        s.faults(reset_after=0)
        wait_for(lambda: s.counters()["resumed"] >= 1, 15, "a resumed certificate session")

    def refused(self, d, s, name, words):
        """The daemon reports the certificate error by name, and does not hammer."""
        def reported():
            up = self.status(d)
            return up["certificate"] and up["certificate"]["error"] == name
        wait_for(reported, 15, f"certificate error {name} in Status")
        up = self.status(d)
        self.assertEqual(up["state"], "down")
        self.assertEqual(up["breaker"], "open")
        for w in words:
            self.assertIn(w, up["certificate"]["reason"])
        d.wait_notify(words[0], 10)
        # The breaker is open: status says so in its exit status (tpactl(1)).
        p = d.tpactl("--socket", d.admin, "status", check=5)
        self.assertIn(f"CERTIFICATE REFUSED ({name})", p.stdout)
        with d.admin_client() as a:
            m = a.call("io.tpad.Admin.Metrics")["text"]
        fails = [int(x.split()[-1]) for x in m.splitlines()
                 if x.startswith("tpad_upstream_certificate_failures_total ")]
        self.assertTrue(fails and fails[0] >= 1, m)
        # A station gets Unavailable at once, with the reason, and no request is made.
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.activate(d)
        self.assertIn(words[0], str(e.exception.params))
        self.assertEqual(s.counters()["requests"], 0)
        # One handshake per backoff-max (1 s in the tests), not a retry storm.
        before = s.counters()["connections"]
        time.sleep(3)
        after = s.counters()["connections"]
        self.assertLessEqual(after - before, 4, (before, after))
        self.assertIn(words[0], d.log_text_all())

    def test_expired(self):
        crt, key = self.pki.issue("old", "good", "127.0.0.1", SANS, expired=True)
        s = self.cert_sim(crt, key)
        d = self.cert_daemon(s.url(), sessions=4).start()
        self.refused(d, s, "expired", ["expired"])

    def test_wrong_host(self):
        crt, key = self.pki.issue("other", "good", "dx-api.example.org",
                                  ["DNS:dx-api.example.org"])
        s = self.cert_sim(crt, key)
        d = self.cert_daemon(s.url()).start()
        self.refused(d, s, "wrong-host", ["wrong host", "127.0.0.1"])

    def test_an_address_is_matched_by_its_ip_entry(self):
        """https://127.0.0.1: the certificate's IP entry, a DNS name or (without
        subjectAltName) a CN spelling the address are for it; mbedTLS 2.28 matched DNS
        names and the CN only, and refused IP:127.0.0.1 as for another host."""
        for name, cn, sans in (("ip", "srv", ["IP:127.0.0.1"]),
                               ("ip6", "srv", ["IP:::1", "IP:127.0.0.1"]),
                               ("cn", "127.0.0.1", [])):
            crt, key = self.pki.issue(name, "good", cn, sans)
            s = self.cert_sim(crt, key)
            d = self.cert_daemon(s.url()).start()
            wait_for(lambda: self.status(d)["state"] == "ok", 15, f"sessions ({name})")
            self.assertEqual(self.activate(d)["device"]["state"], "ISSUED", name)
            d.stop()
            s.stop()

    def test_another_address_is_the_wrong_host(self):
        crt, key = self.pki.issue("other-ip", "good", "127.0.0.1",
                                  ["IP:127.0.0.2", "DNS:localhost"])
        s = self.cert_sim(crt, key)
        d = self.cert_daemon(s.url()).start()
        self.refused(d, s, "wrong-host", ["wrong host", "127.0.0.1"])

    def test_unknown_ca(self):
        self.pki.ca("rogue")
        crt, key = self.pki.issue("rogue-srv", "rogue", "127.0.0.1", SANS)
        s = self.cert_sim(crt, key)
        d = self.cert_daemon(s.url()).start()
        self.refused(d, s, "unknown-ca", ["unknown CA"])

    def test_pin(self):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        other, _ = self.pki.issue("srv2", "good", "127.0.0.1", SANS)
        s = self.cert_sim(crt, key)
        # The CA's key is in the chain too: pinning it (plus a backup) is accepted.
        d = self.cert_daemon(s.url(), conf=(
            f"upstream.pin-sha256 = {self.pki.spki_pin(other)}, "
            f"{self.pki.spki_pin(self.pki.path('good.crt'))}")).start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "pinned sessions")
        self.assertEqual(self.activate(d)["device"]["state"], "ISSUED")
        d.stop()
        d2 = self.cert_daemon(s.url(), conf=(
            f"upstream.pin-sha256 = {self.pki.spki_pin(other)}")).start()
        s.control("POST", "/reset-counters")
        self.refused(d2, s, "pin-mismatch", ["pin mismatch"])

    def test_mtls_required_and_presented(self):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        self.pki.ca("clients")
        ccrt, ckey = self.pki.issue("line1", "clients", "line-1", client=True)
        s = self.cert_sim(crt, key, client_ca=self.pki.path("clients.crt"))
        # Without a client certificate the server refuses the handshake: named as such.
        d = self.cert_daemon(s.url()).start()
        self.refused(d, s, "client-cert-refused", ["client certificate"])
        d.stop()
        # With it, served; the key comes from the credential directory.
        creds = os.path.join(self.tmp, "creds")
        os.makedirs(creds)
        with open(ckey) as f:
            tpadtest.write_secret(os.path.join(creds, "tpa-client-key"), f.read().strip())
        d2 = self.cert_daemon(s.url(), conf=f"upstream.client-cert = {ccrt}",
                              env={"CREDENTIALS_DIRECTORY": creds}).start()
        wait_for(lambda: self.status(d2)["state"] == "ok", 15, "mTLS sessions")
        self.assertEqual(self.activate(d2)["device"]["state"], "ISSUED")
        with open(ckey) as f:
            key_text = f.read()
        body = key_text.split("-----")[2].strip().splitlines()[0]
        self.assertNotIn(body, d2.log_text_all())

    def test_sighup_names_certificate_files_changed_since_start(self):
        """Certificates and keys are read at start: a routine rotation followed by SIGHUP
        changed nothing and said nothing (\"limits applied\"), so the line went on with the
        old certificate until the server refused it."""
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        self.pki.ca("clients")
        ccrt, ckey = self.pki.issue("line1", "clients", "line-1", client=True)
        s = self.cert_sim(crt, key, client_ca=self.pki.path("clients.crt"))
        d = self.cert_daemon(s.url(), conf=(f"upstream.client-cert = {ccrt}\n"
                                            f"upstream.client-key-file = {ckey}")).start()
        wait_for(lambda: self.status(d)["state"] == "ok", 15, "mTLS sessions")
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: "reloaded" in d.log_text_all(), 10, "the reload")
        self.assertNotIn("changed since tpad started", d.log_text_all())
        ccrt2, ckey2 = self.pki.issue("line1b", "clients", "line-1", client=True)
        for new, old in ((ccrt2, ccrt), (ckey2, ckey)):
            with open(new) as f, open(old + ".new", "w") as g:
                g.write(f.read())
            os.chmod(old + ".new", 0o600)
            os.replace(old + ".new", old)  # as an admin's tool rotates: a new file
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: d.log_text_all().count("reloaded") == 2, 10, "the second reload")
        log = d.log_text_all()
        for directive, path in (("upstream.client-cert", ccrt),
                                ("upstream.client-key-file", ckey)):
            self.assertIn(f"{directive} ({path}) changed since tpad started; it is read at "
                          "start only: restart tpad to use it", log)
        self.assertNotIn("upstream.ca-file (", log)
        self.assertEqual(self.activate(d)["device"]["state"], "ISSUED")

    def test_client_key_readable_by_others_refused(self):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        ccrt, ckey = self.pki.issue("line1", "good", "line-1", client=True)
        os.chmod(ckey, 0o644)
        d = self.cert_daemon("https://127.0.0.1:9", conf=(
            f"upstream.client-cert = {ccrt}\nupstream.client-key-file = {ckey}"))
        d.start(wait=False)
        rc = d.proc.wait(15)
        d.proc = None
        d.log.close()
        d.notify.close()
        self.assertNotEqual(rc, 0)
        self.assertIn("chmod o-rwx", d.log_text_all())

    def test_config_errors(self):
        d = self.daemon(conf_extra="upstream.tls = cert\n")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("upstream.auth = psk does not fit upstream.tls = cert", p.stderr)
        d = self.daemon(conf_extra="upstream.pin-sha256 = nonsense\n"
                        "upstream.tls = cert\nupstream.auth = none\n")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("upstream.pin-sha256", p.stderr)


class DxBase(CertBase):
    """A tpa-sim --dx-maker with certificate TLS and OAuth2, and a dx-maker tpad for it."""

    CLIENT = "js-labs-api/maker1"

    def dx_sim(self, extra=()):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        secret = os.path.join(self.tmp, "sim-secret")
        self.secret = secrets.token_hex(16)
        tpadtest.write_secret(secret, self.secret)
        return self.cert_sim(crt, key, extra=["--dx-maker", "--oauth2", "--client-id",
                                              self.CLIENT, "--client-secret-file", secret,
                                              "--customer-id", "100004242", *extra])

    def dx_daemon(self, s, conf="", client=None):
        secret = os.path.join(self.tmp, f"oauth{len(self.daemons)}")
        tpadtest.write_secret(secret, self.secret)
        return self.daemon(upstream_url=s.url(), conf_extra=(
            "api.profile = dx-maker\n"
            f"upstream.ca-file = {self.pki.path('good.crt')}\n"
            f"oauth2.client-id = {client or self.CLIENT}\n"
            f"oauth2.secret-file = {secret}\n"
            "api.hsm-group = HSM_LABS_PROD\n" + conf))



class DxMaker(DxBase):
    """The dx-maker profile through the real daemon against tpa-sim --dx-maker."""

    def test_profile_fills_and_file_overrides(self):
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="api.query-page-size = 50")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--print-config"],
                           capture_output=True, text=True, check=True)
        text = p.stdout
        # Presets say so; a key in the file wins over its preset and names its line.
        self.assertRegex(text, r"# from profile dx-maker\ntls = cert\n")
        self.assertRegex(text, r"# from profile dx-maker\nauth = oauth2\n")
        self.assertRegex(text, r"# from profile dx-maker\ntoken-url = "
                               r"/admin/latest/api/oauth/token\n")
        self.assertRegex(text, r"# from [^\n]*tpad.conf:\d+\nurl = https://127.0.0.1:")
        self.assertRegex(text, r"# from [^\n]*tpad.conf:\d+\nquery-page-size = 50\n")
        self.assertRegex(text, r"# from default\nsessions = ")

    def test_profile_checks(self):
        s = self.dx_sim()
        d = self.dx_daemon(s, client="maker1")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("<platform>/<login>", p.stderr)
        d = self.daemon(conf_extra="api.profile = dx-maker\noauth2.client-id = a/b")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("api.hsm-group", p.stderr)

    def test_plain_http_only_to_loopback(self):
        """http:// to a remote host sent the OAuth2 secret and every record in clear, and
        --check-config called it valid."""
        for url, ok in (("http://dx-api.thingpark.com", False), ("http://10.1.2.3:8080", False),
                        ("http://127.0.0.1:8080", True), ("http://localhost:8080", True),
                        ("http://[::1]:8080", True), ("http://127.evil.example", False)):
            d = self.daemon(conf_extra=("api.profile = dx-maker\noauth2.client-id = a/b\n"
                                        "api.hsm-group = G\n"), upstream_url=url)
            p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                               capture_output=True, text=True)
            if ok:
                self.assertNotIn("in clear", p.stderr, url)
            else:
                self.assertNotEqual(p.returncode, 0, url)
                self.assertIn("the OAuth2 secret in clear", p.stderr)

    def test_owner_token_form_warning(self):
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="api.owner-token-form = as-is").start()
        self.assertIn("api.owner-token-form = as-is", d.log_text_all())
        self.assertIn("alphanumeric", d.log_text_all())
        d.stop()
        # base64: tpa-sim's 32 hex digits read as base64 are 24 bytes, printed as 48 hex.
        d = self.dx_daemon(s, conf="api.owner-token-form = base64").start()
        tok = self.activate(d, "70B3D50000000077")["device"]["ownerToken"]
        self.assertRegex(tok, r"^[0-9A-F]{48}$")
        self.assertNotIn("alphanumeric", d.log_text_all())

    def test_activate_status_and_paging(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        dev = self.activate(d)
        self.assertEqual(dev["device"]["state"], "ISSUED")
        up = self.status(d)
        self.assertEqual(up["oauth2"]["customerId"], "100004242")
        self.assertEqual(up["oauth2"]["clientId"], self.CLIENT)
        self.assertEqual(up["oauth2"]["tokenType"], "bearer")
        self.assertEqual(s.devices()[0]["hsmGroupId"], "HSM_LABS_PROD")
        self.assertNotIn(self.secret, d.log_text_all())
        # A lost answer is settled by the query; with 150 devices and a server that
        # lists them all, the device is on the second page of 100.
        for i in range(150):
            self.activate(d, f"70B3D5000001{i:04X}")
        s.control("POST", "/dx", {"query_unfiltered": True})
        s.faults(drop_before_answer=1.0)
        with self.assertRaises(tpadtest.VarlinkError):
            self.activate(d, "70B3D50000020000")
        s.faults(drop_before_answer=0.0)
        before = s.counters()["queries"]
        dev = self.activate(d, "70B3D50000020000")
        self.assertEqual(dev["device"]["state"], "ISSUED")
        self.assertGreaterEqual(s.counters()["queries"] - before, 2)
        self.assertEqual(s.counters()["imports"], 152)


class OAuth2Refused(DxBase):
    def test_a_refused_client_is_named_and_not_asked_per_call(self):
        """A wrong client secret: every station call sent a token request (16 a second
        from four stations) and Status said "ok". Now the refusal is logged once, named in
        Status, tpactl status and STATUS=, calls fail at once with the server's reason, and
        the token endpoint is asked again once per upstream.backoff-max; a fixed secret
        file is taken without a restart."""
        s = self.dx_sim()
        real = self.secret
        self.secret = "not-the-secret"
        d = self.dx_daemon(s, conf="upstream.backoff-max = 2s").start()
        self.secret = real
        r0 = s.counters()["requests"]
        errors = []
        with d.station_client() as c:
            for i in range(20):
                with self.assertRaises(tpadtest.VarlinkError) as e:
                    c.call("io.tpad.Station.Activate",
                           {"devEUI": f"70B3D50000A0{i:04X}", "tkmInfo": "31110123D345666E2DBD"})
                errors.append(e.exception)
                time.sleep(0.02)
        self.assertLessEqual(s.counters()["requests"] - r0, 2)
        self.assertEqual({e.error for e in errors}, {"io.tpad.Station.UpstreamRejected"})
        up = self.status(d)
        self.assertEqual(up["state"], "down")
        self.assertIn("HTTP 401", up["oauth2"]["refused"])
        self.assertEqual(d.log_text_all().count("the token endpoint refuses client"), 1)
        self.assertNotIn(real, d.log_text_all())
        self.assertNotIn("not-the-secret", d.log_text_all())
        p = d.tpactl("--socket", d.admin, "status")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("OAUTH2 CLIENT REFUSED", p.stdout)
        wait_for(lambda: any("upstream down" in n and "OAuth2 client refused" in n
                             for n in d.notifications), 10, "STATUS= naming the refusal")
        # The admin fixes the secret file: taken at the next try, no restart, even with no
        # call to make it (Status recovers by itself within upstream.backoff-max).
        with open(d.conf) as f:
            path = [l.split("=", 1)[1].strip() for l in f if l.startswith("secret-file")][0]
        tpadtest.write_secret(path, real)
        wait_for(lambda: self.status(d)["oauth2"]["refused"] is None, 10,
                 "the refusal lifted without a call")

        def works():
            try:
                return self.activate(d, "70B3D50000A0FFFF")["device"]["state"] == "ISSUED"
            except tpadtest.VarlinkError:
                return False
        wait_for(works, 10, "an activation with the fixed secret")
        up = self.status(d)
        self.assertIsNone(up["oauth2"]["refused"])
        self.assertNotEqual(up["state"], "down")


class OAuth2Failing(DxBase):
    """A token endpoint that fails (not a refusal): no answer of the API's, so nothing was
    imported, and it is asked again with backoff, not once per call."""

    TKM = "31110123D345666E2DBD"

    def call(self, d, eui):
        with d.station_client() as c:
            return c.call("io.tpad.Station.Activate", {"devEUI": eui, "tkmInfo": self.TKM})

    def failing_calls(self, d, s, n):
        errors = []
        for i in range(n):
            with self.assertRaises(tpadtest.VarlinkError) as e:
                self.call(d, f"70B3D50000B0{i:04X}")
            errors.append(e.exception)
            time.sleep(0.02)
        return errors

    def check_endpoint_failing(self, status, why):
        """Calls fail as UpstreamUnavailable, their attempts not-sent (FAILED, so tried
        again at once): they were marked maybe-landed (OutcomeUnknown until settle-after),
        and every call sent a token request (960 in 3 s from four stations)."""
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="upstream.backoff-min = 300ms\n"
                                    "upstream.backoff-max = 2s\n"
                                    "upstream.settle-after = 60s").start()
        s.faults(token_status=status)
        t0 = s.counters()["token_requests"]
        errors = self.failing_calls(d, s, 12)
        self.assertEqual({e.error for e in errors}, {"io.tpad.Station.UpstreamUnavailable"})
        self.assertTrue(all(e.params.get("retryAfter", 0) >= 1 for e in errors), errors[0].params)
        self.assertLessEqual(s.counters()["token_requests"] - t0, 4)
        self.assertEqual(s.counters()["imports"], 0)
        up = self.status(d)
        self.assertEqual(up["state"], "down")
        self.assertIn(why, up["oauth2"]["failing"])
        self.assertIsNone(up["oauth2"]["refused"])
        p = d.tpactl("--socket", d.admin, "status")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("OAUTH2 TOKEN ENDPOINT FAILING: ", p.stdout)
        with d.admin_client() as a:
            info = a.call("io.tpad.Admin.GetDevice", {"devEUI": "70B3D50000B00000"})
        self.assertEqual(info["device"]["state"], "FAILED")
        self.assertEqual({x["outcome"] for x in info["attempts"]}, {"not-sent"})
        self.assertEqual(d.log_text_all().count("OAuth2: "), 1, d.log_text_all())
        # The endpoint recovers: the hold's timer asks again by itself, and the device
        # whose call failed is imported at once (no settle-after wait).
        s.faults(token_status=0)
        wait_for(lambda: self.status(d)["oauth2"]["failing"] is None, 10,
                 "the failing hold lifted without a call")
        self.assertIn("the token endpoint gives tokens again", d.log_text_all())
        t = time.monotonic()
        self.assertEqual(self.call(d, "70B3D50000B00000")["device"]["state"], "ISSUED")
        self.assertLess(time.monotonic() - t, 5)
        self.assertEqual(s.counters()["imports"], 1)

    def test_a_token_endpoint_answering_500(self):
        self.check_endpoint_failing(500, "HTTP 500")

    def test_a_token_endpoint_answering_without_a_token(self):
        self.check_endpoint_failing(200, "HTTP 200 without a usable access_token")

    def test_a_token_due_for_refresh_is_used_while_the_endpoint_fails(self):
        """Refresh is due at 90 % of a token's life (at least 30 s before expiry): a
        failing refresh made every call fail although the token had 30 s left."""
        s = self.dx_sim(extra=["--token-ttl", "36"])
        d = self.dx_daemon(s).start()
        self.assertEqual(self.call(d, "70B3D50000C00001")["device"]["state"], "ISSUED")
        time.sleep(6.5)  # refresh due after 6 s
        s.faults(token_status=503)
        for i in range(2, 6):
            self.assertEqual(self.call(d, f"70B3D50000C0000{i}")["device"]["state"], "ISSUED")
        self.assertEqual(s.counters()["imports"], 5)
        up = self.status(d)
        self.assertIn("HTTP 503", up["oauth2"]["failing"])
        self.assertNotEqual(up["state"], "down")

    def test_a_refused_send_whose_retry_finds_no_token_is_refused_not_unsent(self):
        """Tokens revoked and the token endpoint failing: the import went out, was
        answered 401, and its retry found no token. It was labelled not-sent (nothing
        reached the API); it is "refused" (the API's answer), and the station is told to
        try again (UpstreamUnavailable), not that the device was rejected."""
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="upstream.backoff-min = 300ms\n"
                                    "upstream.backoff-max = 2s").start()
        self.assertEqual(self.call(d, "70B3D50000E00000")["device"]["state"], "ISSUED")
        s.control("POST", "/revoke-tokens")
        s.faults(token_status=500)
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.call(d, "70B3D50000E00001")
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
        with d.admin_client() as a:
            info = a.call("io.tpad.Admin.GetDevice", {"devEUI": "70B3D50000E00001"})
        self.assertEqual(info["device"]["state"], "FAILED")
        self.assertEqual([x["outcome"] for x in info["attempts"]], ["refused"])

    def test_a_failing_token_endpoint_replaces_an_api_refusal(self):
        """After the API refused fresh tokens, the token endpoint failing was still shown
        and answered as that refusal (UpstreamRejected, FAILED rows with a 401 reason)."""
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="upstream.backoff-min = 300ms\n"
                                    "upstream.backoff-max = 1s").start()
        s.faults(api_unauthorized=True)
        with self.assertRaises(tpadtest.VarlinkError):
            self.call(d, "70B3D50000E10000")
        self.assertIsNotNone(self.status(d)["oauth2"]["refused"])
        s.faults(api_unauthorized=False, token_status=500)
        time.sleep(1.2)  # the refusal's hold ends; the endpoint is asked and fails

        def failing():
            o = self.status(d)["oauth2"]
            return o["failing"] and not o["refused"]
        wait_for(failing, 10, "the endpoint's failure shown instead of the refusal")
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.call(d, "70B3D50000E10001")
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")

    def test_retry_after_is_told_as_long_as_tpad_holds(self):
        """A Retry-After of an hour: tpad holds at most 5 minutes, and stations were told
        3600 s."""
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        s.faults(token_status=429, retry_after=3600)
        for i in range(2):
            with self.assertRaises(tpadtest.VarlinkError) as e:
                self.call(d, f"70B3D50000E2000{i}")
            self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
            self.assertLessEqual(e.exception.params["retryAfter"], 300)
            self.assertGreaterEqual(e.exception.params["retryAfter"], 299)

    def test_an_api_refusing_every_token_is_held_as_a_refused_client(self):
        """The API answering 401 to fresh tokens: every call fetched a new token and sent
        its import twice, and Status said "ok". Held as a refused client now: one token
        and one API request per upstream.backoff-max, logged once (not again each time
        the token endpoint hands out a token the API refuses), until the API takes one."""
        s = self.dx_sim()
        d = self.dx_daemon(s, conf="upstream.backoff-max = 1s").start()
        self.assertEqual(self.call(d, "70B3D50000D00000")["device"]["state"], "ISSUED")
        s.faults(api_unauthorized=True)
        c0 = s.counters()
        errors = self.failing_calls(d, s, 10)
        c1 = s.counters()
        self.assertEqual({e.error for e in errors}, {"io.tpad.Station.UpstreamRejected"})
        self.assertLessEqual(c1["token_requests"] - c0["token_requests"], 2)
        self.assertLessEqual(c1["requests"] - c0["requests"], 5)
        up = self.status(d)
        self.assertEqual(up["state"], "down")
        self.assertIn("HTTP 401 to a fresh OAuth2 token", up["oauth2"]["refused"])
        # Calls go on for several holds: still refused, still one line.
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            with self.assertRaises(tpadtest.VarlinkError):
                self.call(d, "70B3D50000D0FFFF")
            time.sleep(0.1)
        self.assertIsNotNone(self.status(d)["oauth2"]["refused"])
        log = d.log_text_all()
        self.assertEqual(log.count("check the rights of client"), 1)
        self.assertNotIn("gives tokens again", log)
        self.assertLessEqual(s.counters()["token_requests"] - c0["token_requests"], 12)
        s.faults(api_unauthorized=False)

        def works():
            try:
                return self.call(d, "70B3D50000B00001")["device"]["state"] == "ISSUED"
            except tpadtest.VarlinkError:
                return False
        wait_for(works, 10, "an activation once the API takes tokens again")
        self.assertIsNone(self.status(d)["oauth2"]["refused"])
        self.assertEqual(d.log_text_all().count("accepts the tokens of client"), 1)


class OAuth2RefusedThenUnreachable(DxBase):
    def test_a_refused_client_stays_refused_while_the_endpoint_does_not_answer(self):
        """A refused client whose next token request gets no answer: as far as tpad knows
        it is still refused (the same hold, the same reason), not failing."""
        s = self.dx_sim()
        real = self.secret
        self.secret = "not-the-secret"
        d = self.dx_daemon(s, conf="upstream.backoff-max = 1s").start()
        self.secret = real
        with self.assertRaises(tpadtest.VarlinkError):
            self.activate(d, "70B3D50000F00000")
        reason = self.status(d)["oauth2"]["refused"]
        self.assertIn("HTTP 401", reason)
        s.faults(drop_before_answer=1.0)
        r0 = s.counters()["token_requests"]
        wait_for(lambda: s.counters()["token_requests"] > r0, 10, "the hold's next request")
        time.sleep(0.3)
        up = self.status(d)
        self.assertEqual(up["oauth2"]["refused"], reason)
        self.assertIsNone(up["oauth2"]["failing"])
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.activate(d, "70B3D50000F00001")
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamRejected")


class Retire(DxBase):
    """Admin.Retire / tpactl retire: DELETE by ref, RETIRED, audited, lost answers settled."""

    def retired_everywhere(self, d, eui, reason):
        with d.station_client() as c:
            for m, p in (("io.tpad.Station.Lookup", {"devEUI": eui}),
                         ("io.tpad.Station.Activate",
                          {"devEUI": eui, "tkmInfo": "31110123D345666E2DBD"})):
                with self.assertRaises(tpadtest.VarlinkError) as e:
                    c.call(m, p)
                self.assertEqual(e.exception.error, "io.tpad.Station.Retired")
                self.assertIn(reason, e.exception.params["reason"])
                self.assertEqual(e.exception.params["reason"].count("retired"), 1)
        with d.admin_client() as a:
            dev = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui})
        self.assertEqual(dev["device"]["state"], "RETIRED")
        self.assertTrue(any(x["method"] == "io.tpad.Admin.Retire" and reason in x["outcome"]
                            for x in dev["audit"]), dev["audit"])

    def test_retire_of_a_failed_device_while_it_is_activated(self):
        """Retire of a FAILED device while a station's Activate imports it again: Retire
        waits for the activation (or the activation for Retire), so the answer and the row
        agree with the cloud (Retire used to write RETIRED, "never imported", over the
        PENDING row of the import in flight, which then made it ISSUED)."""
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        for n in range(3):
            e = f"70B3D5000000070{n}"
            s.faults(rate_429=1.0, retry_after=0)
            with d.station_client() as c:
                with self.assertRaises(tpadtest.VarlinkError):
                    c.call("io.tpad.Station.Activate",
                           {"devEUI": e, "tkmInfo": "31110123D345666E2DBD"})
            with d.admin_client() as a:
                self.assertEqual(a.call("io.tpad.Admin.GetDevice", {"devEUI": e})
                                 ["device"]["state"], "FAILED")
            s.faults(rate_429=0.0, import_latency_ms=300)
            time.sleep(1.2)  # the breaker the 429s may have opened closes
            sc, ac = tpadtest.Client(d.station), tpadtest.Client(d.admin)
            sc.send("io.tpad.Station.Activate", {"devEUI": e, "tkmInfo": "31110123D345666E2DBD"})
            ac.send("io.tpad.Admin.Retire", {"devEUI": e, "reason": "scrapped"})
            retire, act = ac.recv(), sc.recv()
            sc.close()
            ac.close()
            with d.admin_client() as a:
                state = a.call("io.tpad.Admin.GetDevice", {"devEUI": e})["device"]["state"]
            in_cloud = any(x["deviceEUI"].upper() == e for x in s.devices())
            self.assertEqual(state, "RETIRED", (retire, act))
            self.assertFalse(in_cloud, (retire, act))
            self.assertEqual(retire["parameters"]["device"]["state"], "RETIRED")
            if "error" in act:  # Retire went first
                self.assertEqual(act["error"], "io.tpad.Station.Retired")
                self.assertFalse(retire["parameters"]["cloudDeleted"])
            else:  # the activation went first: Retire deleted what it imported
                self.assertTrue(retire["parameters"]["cloudDeleted"])
        self.assertEqual(s.counters()["duplicate_imports"], 0)

    def test_retire_with_tpactl(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        eui = "70B3D50000000001"
        self.activate(d, eui)
        p = d.tpactl("--socket", d.admin, "retire", eui, "--reason", "scrapped: cracked case",
                     check=0)
        self.assertIn("RETIRED", p.stdout)
        self.assertIn("deleted in the cloud", p.stdout)
        self.assertEqual(s.devices(), [])
        self.retired_everywhere(d, eui, "cracked case")
        # Again: nothing changes, no second delete is sent.
        d.tpactl("--socket", d.admin, "retire", eui, "--reason", "again", check=0)
        self.assertEqual(s.control("GET", "/dx")["delete_requests"], 1)
        p = d.tpactl("--socket", d.admin, "retire", eui, check=2)
        self.assertIn("--reason", p.stderr)
        # The retired devices are listed and exported by their state.
        p = d.tpactl("--socket", d.admin, "devices", "--state", "retired", check=0)
        self.assertEqual([l.split()[:2] for l in p.stdout.splitlines()[1:]], [[eui, "RETIRED"]])
        with d.admin_client() as a:
            self.assertEqual(a.call("io.tpad.Admin.ListDevices", {"state": "ISSUED"})["devices"],
                             [])

    def test_reason_in_characters(self):
        """The reason's limit is 200 characters, not bytes; what the row and the audit
        trail keep of a long one is cut between characters (PostgreSQL takes only
        valid UTF-8, and so do the replies)."""
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        eui = "70B3D50000000005"
        self.activate(d, eui)
        # 200 characters, 399 bytes: the audit's 80-byte cut and the row's would fall
        # inside an é.
        reason = "a" + "\u00e9" * 199
        with d.admin_client() as a:
            for bad in ("\u00e9" * 201, "tab\there", ""):
                with self.assertRaises(tpadtest.VarlinkError) as e:
                    a.call("io.tpad.Admin.Retire", {"devEUI": eui, "reason": bad})
                self.assertEqual(e.exception.params,
                                 {"parameter": "reason",
                                  "reason": "must be 1 to 200 printable characters"})
            r = a.call("io.tpad.Admin.Retire", {"devEUI": eui, "reason": reason})
            self.assertEqual(r["device"]["state"], "RETIRED")
            dev = a.call("io.tpad.Admin.GetDevice", {"devEUI": eui})
        audit = [x["outcome"] for x in dev["audit"] if x["method"] == "io.tpad.Admin.Retire"]
        self.assertEqual(len(audit), 1, dev["audit"])
        self.assertTrue(audit[0].endswith(": a" + "\u00e9" * 39), audit[0])
        with d.station_client() as c:
            with self.assertRaises(tpadtest.VarlinkError) as e:
                c.call("io.tpad.Station.Lookup", {"devEUI": eui})
        said = e.exception.params["reason"]
        self.assertIn("retired: a\u00e9\u00e9", said)
        self.assertTrue(reason.startswith(said[said.index("retired: ") + 9:]), said)

    def test_lost_answer_settled_by_query(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        eui = "70B3D50000000002"
        self.activate(d, eui)
        # The delete lands, its answer is lost: the query finds nothing -> RETIRED.
        s.control("POST", "/dx", {"drop_delete_after": 1})
        q0 = s.counters()["queries"]
        with d.admin_client() as a:
            r = a.call("io.tpad.Admin.Retire", {"devEUI": eui, "reason": "lost answer"})
        self.assertTrue(r["cloudDeleted"])
        self.assertEqual(r["device"]["state"], "RETIRED")
        self.assertEqual(s.counters()["queries"] - q0, 1)
        self.assertEqual(s.control("GET", "/dx")["delete_requests"], 1)
        self.retired_everywhere(d, eui, "lost answer")

    def test_lost_request_deleted_again(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        eui = "70B3D50000000003"
        self.activate(d, eui)
        # The delete never lands and no answer comes: the query still finds the device,
        # so it is deleted once more.
        s.control("POST", "/dx", {"drop_delete_before": 1})
        with d.admin_client() as a:
            r = a.call("io.tpad.Admin.Retire", {"devEUI": eui, "reason": "lost request"})
        self.assertTrue(r["cloudDeleted"])
        dx = s.control("GET", "/dx")
        self.assertEqual((dx["delete_requests"], dx["deletes"]), (2, 1))
        self.assertEqual(s.devices(), [])

    def test_unavailable_changes_nothing(self):
        s = self.dx_sim()
        d = self.dx_daemon(s).start()
        eui = "70B3D50000000004"
        self.activate(d, eui)
        s.faults(rate_5xx=1.0)
        with d.admin_client() as a:
            with self.assertRaises(tpadtest.VarlinkError) as e:
                a.call("io.tpad.Admin.Retire", {"devEUI": eui, "reason": "r"})
            self.assertEqual(e.exception.error, "io.tpad.Admin.UpstreamUnavailable")
            self.assertEqual(a.call("io.tpad.Admin.GetDevice",
                                    {"devEUI": eui})["device"]["state"], "ISSUED")
            with self.assertRaises(tpadtest.VarlinkError) as e:
                a.call("io.tpad.Admin.Retire", {"devEUI": "70B3D5000000FFFF", "reason": "r"})
            self.assertEqual(e.exception.error, "io.tpad.Admin.NotFound")


class HsmKeyPool(DxBase):
    """device.app-key-source = cloud-hsm: appKeyGens fills a pool, refilled in the
    background under load; a station's activation never waits for a key."""

    def test_pool_refilled_under_load(self):
        import threading
        s = self.dx_sim()
        key = os.path.join(self.tmp, "tpa-rsa.key")
        self.daemon().tpactl("keygen-rsa", key, "--bits", "2048", check=0)
        d = self.dx_daemon(s, conf=(
            "device.app-key-source = cloud-hsm\ndevice.app-key-pool = 30\n"
            f"device.rsa-key-file = {key}\nupstream.sessions = 6")).start()

        def pool():
            with d.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["appKeys"]
        wait_for(lambda: pool()["available"] == 60, 20, "the first fill of the key pool")
        self.assertEqual(pool()["source"], "cloud-hsm")
        # From now on the cloud's HSM takes 3 s per appKeyGens: a station that waited for
        # a key would take that long; imports stay fast.
        s.control("POST", "/dx", {"keygen_delay_ms": 3000})
        gens0 = s.control("GET", "/dx")["key_gens"]
        lat, errors, keys = [], [], set()

        def station(k):
            with d.station_client() as c:
                for i in range(10):
                    t0 = time.monotonic()
                    try:
                        r = c.call("io.tpad.Station.Activate",
                                   {"devEUI": f"70B3D5000{k:03X}{i:04X}",
                                    "generateAppKey": True})
                        keys.add(r["device"]["appKey"])
                    except tpadtest.VarlinkError as e:
                        errors.append(str(e))
                    lat.append(time.monotonic() - t0)
        t_start = time.monotonic()
        threads = [threading.Thread(target=station, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - t_start
        self.assertEqual(errors, [])
        self.assertEqual(len(keys), 40)
        p = pool()
        self.assertEqual(p["handedOut"], 40)
        self.assertEqual(p["empty"], 0)
        # The pool fell below its mark during the run: a refill went out in the
        # background and no station waited for it.
        if elapsed < 2.5:
            self.assertTrue(p["refilling"], p)
        self.assertLess(max(lat), 1.5, sorted(lat)[-5:])
        wait_for(lambda: pool()["available"] >= 30, 20, "the pool refilled above the mark")
        dx = s.control("GET", "/dx")
        self.assertGreater(dx["key_gens"], gens0)
        # Every import of a pool key carried its hsmEncryptedAppKey.
        self.assertEqual(dx["hsm_key_imports"], 40)
        p = d.tpactl("--socket", d.admin, "status", check=0)
        self.assertIn("app keys:    cloud-hsm pool", p.stdout)
        self.assertIn("profile:     dx-maker", p.stdout)
        self.assertIn("customer 100004242", p.stdout)
        with d.admin_client() as a:
            m = a.call("io.tpad.Admin.Metrics")["text"]
        self.assertIn("tpad_app_key_pool_available", m)

    def test_pool_sealed_in_store_survives_restart(self):
        s = self.dx_sim()
        key = os.path.join(self.tmp, "tpa-rsa.key")
        self.daemon().tpactl("keygen-rsa", key, "--bits", "2048", check=0)
        d = self.dx_daemon(s, conf=("device.app-key-source = cloud-hsm\n"
                                    "device.app-key-pool = 8\n"
                                    f"device.rsa-key-file = {key}")).start()

        def pool():
            with d.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["appKeys"]
        wait_for(lambda: pool()["available"] == 16, 15, "the first fill")
        keys = set()
        with d.station_client() as c:
            for i in range(3):
                keys.add(c.call("io.tpad.Station.Activate",
                                {"devEUI": f"70B3D50000AA000{i}",
                                 "generateAppKey": True})["device"]["appKey"])
        gens = s.control("GET", "/dx")["key_gens"]
        d.stop()
        # Sealed rows: 16 pairs, 3 handed out; no AppKey in clear anywhere in the file.
        out = subprocess.run(["sqlite3", d.store, "SELECT count(*), sum(handed), "
                              "min(length(sealed)) FROM app_key_pool"],
                             capture_output=True, text=True, check=True).stdout.strip()
        self.assertEqual(out, "16|3|60")
        with open(d.store, "rb") as f:
            raw = f.read()
        for k in keys:
            self.assertNotIn(bytes.fromhex(k), raw)
        d.start()
        p = pool()
        self.assertEqual((p["restored"], p["available"]), (13, 13))
        self.assertEqual(s.control("GET", "/dx")["key_gens"], gens)  # 13 >= 8: no refill
        with d.station_client() as c:
            k = c.call("io.tpad.Station.Activate",
                       {"devEUI": "70B3D50000AA0009", "generateAppKey": True})["device"]["appKey"]
        self.assertNotIn(k, keys)
        self.assertEqual(s.control("GET", "/dx")["hsm_key_imports"], 4)

    def test_empty_pool_answers_at_once(self):
        s = self.dx_sim(extra=["--rate-5xx", "1"])
        key = os.path.join(self.tmp, "tpa-rsa.key")
        self.daemon().tpactl("keygen-rsa", key, "--bits", "2048", check=0)
        d = self.dx_daemon(s, conf=("device.app-key-source = cloud-hsm\n"
                                    f"device.rsa-key-file = {key}")).start()

        def failed():
            with d.admin_client() as a:
                p = a.call("io.tpad.Admin.Status")["appKeys"]
            return p["failures"] > 0 and p["lastError"]
        wait_for(failed, 15, "a failed appKeyGens in Status")
        t0 = time.monotonic()
        with self.assertRaises(tpadtest.VarlinkError) as e:
            self.activate_generated(d)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(e.exception.error, "io.tpad.Station.UpstreamUnavailable")
        self.assertIn("key pool is empty", e.exception.params["reason"])

    def activate_generated(self, d):
        with d.station_client() as c:
            return c.call("io.tpad.Station.Activate",
                          {"devEUI": "70B3D500000000AA", "generateAppKey": True})

    def test_rsa_key_readable_by_others_refused(self):
        s = self.dx_sim()
        key = os.path.join(self.tmp, "tpa-rsa.key")
        self.daemon().tpactl("keygen-rsa", key, "--bits", "2048", check=0)
        os.chmod(key, 0o644)
        d = self.dx_daemon(s, conf=("device.app-key-source = cloud-hsm\n"
                                    f"device.rsa-key-file = {key}"))
        d.start(wait=False)
        rc = d.proc.wait(15)
        d.proc = None
        d.log.close()
        d.notify.close()
        self.assertNotEqual(rc, 0)
        self.assertIn("chmod o-rwx", d.log_text_all())


class Manifest(CertBase):
    """tpactl import --manifest: signed entries verified, mapped, imported; a tampered one
    refused by index and uniqueId with nothing sent."""

    def make(self, n, tamper=None, attr_cn=True):
        self.pki.ca("signers")
        signer_crt, signer_key = self.pki.issue("signer", "signers", "Microchip manifest signer")
        self.pki.ca("devices")
        entries, expect = [], []
        for i in range(n):
            uid = f"0123{i:04x}aabbccdd01"
            eui = f"0004A30B0010{i:04X}"
            crt, _ = self.pki.issue(f"dev{i}", "devices", eui if attr_cn else f"device {i}",
                                    client=True, subject_extra="/O=Microchip Technology")
            payload = {"version": 1, "model": "ATECC608B", "partNumber": "ATECC608B-TNGLORA",
                       "manufacturer": {"organizationName": "Microchip Technology Inc"},
                       "groupId": "TEST", "provisioningTimestamp": "2026-12-01T00:00:00Z",
                       "uniqueId": uid,
                       "publicKeySet": {"keys": [{"kid": "0", "kty": "EC", "crv": "P-256",
                                                  "x5c": [certs.cert_der_b64(crt)]}]}}
            entries.append(certs.jws_entry(self.pki, signer_key, payload, uid))
            expect.append((eui, ("3121" + uid[:16]).upper(), uid))
        if tamper is not None:
            e = entries[tamper]
            body = json.loads(certs.base64.urlsafe_b64decode(e["payload"] + "=="))
            body["groupId"] = "EVIL"
            e["payload"] = certs.b64url(json.dumps(body).encode())
        path = os.path.join(self.tmp, "manifest.json")
        with open(path, "w") as f:
            json.dump(entries, f)
        return path, signer_crt, expect

    def test_good_manifest_imported(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        path, signer, expect = self.make(4)
        d = self.daemon(upstream_url=s.url(), psk_hex=psk, conf_extra=(
            f"import.manifest-signer = {signer}\nimport.manifest-dev-eui = CN")).start()
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, check=0)
        self.assertIn("4 issued", p.stdout)
        got = {x["deviceEUI"]: x["tkmInfo"] for x in s.devices()}
        self.assertEqual(got, {eui: tkm for eui, tkm, _ in expect})
        # Running it again resumes: nothing new is sent.
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, check=0)
        self.assertIn("4 skipped", p.stdout)
        self.assertEqual(s.counters()["imports"], 4)

    def test_tampered_entry_refused_by_index(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        path, signer, expect = self.make(4, tamper=2)
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="import.manifest-dev-eui = CN").start()
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, "--signer", signer,
                     check=1)
        self.assertIn(f"entry 2 (uniqueId {expect[2][2]}): bad signature", p.stderr)
        self.assertIn("nothing was imported", p.stderr)
        self.assertNotIn("entry 1", p.stderr)
        self.assertEqual(s.counters()["requests"], 0)
        # Another signer: every entry is refused.
        self.pki.ca("other")
        other, _ = self.pki.issue("other-signer", "other", "not Microchip")
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, "--signer", other,
                     check=1)
        self.assertIn("4 bad entries", p.stderr)

    def test_dev_eui_map_and_missing_attribute(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        path, signer, expect = self.make(2, attr_cn=False)
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="import.manifest-dev-eui = CN").start()
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, "--signer", signer,
                     check=1)
        self.assertIn("entry 0 (uniqueId", p.stderr)
        self.assertIn("holds no DevEUI", p.stderr)
        m = os.path.join(self.tmp, "map.csv")
        with open(m, "w") as f:
            f.write("serial,devEUI\n")
            for eui, _, uid in expect:
                f.write(f"{uid},{eui}\n")
        p = d.tpactl("--socket", d.admin, "import", "--manifest", path, "--signer", signer,
                     "--dev-eui-map", m, check=0)
        self.assertIn("2 issued", p.stdout)
        self.assertEqual(sorted(x["deviceEUI"] for x in s.devices()),
                         sorted(eui for eui, _, _ in expect))

    def test_keygen_rsa(self):
        d = self.daemon()
        key = os.path.join(self.tmp, "tpa-rsa.key")
        d.tpactl("keygen-rsa", key, "--bits", "2048", check=0)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        out = subprocess.run(["openssl", "pkey", "-in", key, "-noout", "-text"],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn("2048 bit", out)
        p = d.tpactl("keygen-rsa", key, check=1)
        self.assertIn("never overwrites", p.stderr)


class OpenSSLInterop(CertBase):
    """A TLS stack other than ours validates the handshake: openssl s_server -www."""

    def test_openssl_s_server(self):
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        port = tpadtest.free_port()
        log = open(os.path.join(self.tmp, "s_server.log"), "wb")
        srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                "-cert", crt, "-key", key, "-www", "-tls1_2"],
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.port_open(port), 10, "openssl s_server")
            d = self.cert_daemon(f"https://127.0.0.1:{port}", sessions=1).start()
            wait_for(lambda: self.status(d)["state"] == "ok", 15, "a session to s_server")
            suite = self.status(d)["sessions"][0]["ciphersuite"]
            self.assertIn("ECDHE-ECDSA", suite)
            # s_server -www answers any GET with its HTML status page: the query gets an
            # HTTP answer through the verified channel (not a device list, so unavailable).
            with d.admin_client() as a:
                r = a.call("io.tpad.Admin.Status")
            self.assertIsNone(r["upstream"]["certificate"])
        finally:
            srv.terminate()
            srv.wait(10)
            log.close()

    def test_openssl_s_server_wrong_ca(self):
        self.pki.ca("rogue")
        crt, key = self.pki.issue("rogue-srv", "rogue", "127.0.0.1", SANS)
        port = tpadtest.free_port()
        log = open(os.path.join(self.tmp, "s_server.log"), "wb")
        srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                "-cert", crt, "-key", key, "-www"],
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.port_open(port), 10, "openssl s_server")
            d = self.cert_daemon(f"https://127.0.0.1:{port}", sessions=1).start()

            def reported():
                c = self.status(d)["certificate"]
                return c and c["error"] == "unknown-ca"
            wait_for(reported, 15, "unknown CA from s_server")
        finally:
            srv.terminate()
            srv.wait(10)
            log.close()

    def test_stunnel_with_certificate(self):
        """A full activation through stunnel4 (OpenSSL) serving a certificate and asking
        for ours, in front of a plain tpa-sim."""
        import shutil
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        if not exe:
            self.skipTest("stunnel4 is not installed")
        crt, key = self.pki.issue("srv", "good", "127.0.0.1", SANS)
        self.pki.ca("clients")
        ccrt, ckey = self.pki.issue("line1", "clients", "line-1", client=True)
        s = self.sim(None, plain=True).start()
        port = tpadtest.free_port()
        conf = os.path.join(self.tmp, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"foreground = yes\npid =\ndebug = 5\n[tpa]\naccept = 127.0.0.1:{port}\n"
                    f"connect = 127.0.0.1:{s.port}\ncert = {crt}\nkey = {key}\n"
                    f"CAfile = {self.pki.path('clients.crt')}\nverifyChain = yes\n"
                    "sslVersion = TLSv1.2\n")
        log = open(os.path.join(self.tmp, "stunnel.log"), "wb")
        st = subprocess.Popen([exe, conf], stdout=log, stderr=log)
        try:
            wait_for(lambda: self.port_open(port), 10, "stunnel to listen")
            d = self.cert_daemon(f"https://127.0.0.1:{port}", sessions=1, conf=(
                f"upstream.client-cert = {ccrt}\nupstream.client-key-file = {ckey}")).start()
            wait_for(lambda: self.status(d)["state"] == "ok", 15, "a session through stunnel")
            self.assertEqual(self.activate(d)["device"]["state"], "ISSUED")
            self.assertEqual(s.counters()["imports"], 1)
        finally:
            st.terminate()
            st.wait(10)
            log.close()

    @staticmethod
    def port_open(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False


if __name__ == "__main__":
    tpadtest.main()
