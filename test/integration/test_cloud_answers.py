"""Integration tests of what the real cloud (DX Maker API with OAuth2) and its token
endpoint answer, through the real tpad against a small cloud in Python (plain HTTP on
loopback, which the dx-maker profile allows) or tpa-sim: what stations, Status, the store,
tpactl and the log are told, and that none of them shows tpad's secrets."""

import json
import os
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tpadtest
from certs import PKI
from tpadtest import TpadTestCase, VarlinkError, wait_for, write_secret

CLIENT = "js-labs-api/maker1"
TKM = "31110123D345666E2DBD"
TOKEN_PATH = "/admin/latest/api/oauth/token"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWtlcjEifQ.c2lnbmF0dXJlLXNlY3JldA"


class Base(TpadTestCase):
    def setUp(self):
        super().setUp()
        self.servers = []

    def tearDown(self):
        super().tearDown()
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()

    def cloud(self, handle):
        """A cloud answering each request with handle(request, path, body)."""
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, obj, headers=()):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                handle(self, self.path, self.rfile.read(n) if n else b"")

            do_POST = do_GET = do_DELETE = serve

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    def dx_daemon(self, url, secret="0123456789abcdef-secret", conf="", **kw):
        d = os.path.join(self.tmp, f"secret{len(self.daemons)}")
        write_secret(d, secret)
        t = self.daemon(upstream_url=url, conf_extra=(
            "api.profile = dx-maker\n"
            f"oauth2.client-id = {CLIENT}\n"
            f"oauth2.secret-file = {d}\n"
            "api.hsm-group = HSM_LABS_PROD\n" + conf), **kw)
        t.secret_file = d
        return t

    def activate(self, d, eui):
        """(error name or "ok", parameters)."""
        try:
            with d.station_client(60) as c:
                return "ok", c.call("io.tpad.Station.Activate", {"devEUI": eui, "tkmInfo": TKM})
        except VarlinkError as e:
            return e.error, e.params

    def status(self, d):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.Status")

    def device(self, d, eui):
        with d.admin_client() as a:
            return a.call("io.tpad.Admin.GetDevice", {"devEUI": eui})


def token_ok(r, token="abc"):
    r.send(200, {"access_token": token, "token_type": "bearer", "expires_in": 3600})


class Secrets(Base):
    def test_a_refusal_quoting_the_client_secret_shows_it_nowhere(self):
        """The token endpoint's refusal quotes the secret, as is and URL-encoded: the
        station, Status, tpactl status and the log used to show it (only hex was masked)."""
        secret = "S3cr3t-Passw0rd!x"

        def h(r, path, body):
            if path.startswith(TOKEN_PATH):
                sent = urllib.parse.parse_qs(body.decode())["client_secret"][0]
                return r.send(401, {"error": "invalid_client",
                                    "error_description": "bad secret " + sent,
                                    "message": "client_secret=" + urllib.parse.quote(sent)})
            r.send(500, {})
        d = self.dx_daemon(self.cloud(h), secret=secret).start()
        err, params = self.activate(d, "70B3D50000000001")
        self.assertEqual(err, "io.tpad.Station.UpstreamRejected")
        self.assertEqual(params["status"], 0)  # not sent: the token endpoint refused
        self.assertEqual(params["message"], "client_secret=***")
        st = json.dumps(self.status(d))
        self.assertIn("bad secret ***", st)
        p = d.tpactl("--socket", d.admin, "status", check=None)
        for where, text in (("station", json.dumps(params)), ("Status", st),
                            ("tpactl status", p.stdout + p.stderr), ("log", d.log_text_all())):
            self.assertNotIn(secret, text, where)
            self.assertNotIn(urllib.parse.quote(secret), text, where)

    def test_an_api_refusal_quoting_the_token_shows_it_nowhere(self):
        """The API answers 401 quoting the bearer token (a JWT): the station, the log,
        Status and the store's lastError used to keep it."""
        def h(r, path, body):
            if path.startswith(TOKEN_PATH):
                return token_ok(r, JWT)
            r.send(401, {"code": "UNAUTHORIZED",
                         "message": "token rejected: " + r.headers.get("Authorization", "")})
        d = self.dx_daemon(self.cloud(h)).start()
        err, params = self.activate(d, "70B3D50000000002")
        self.assertNotEqual(err, "ok")
        for where, text in (("station", json.dumps(params)),
                            ("Status", json.dumps(self.status(d))),
                            ("store", json.dumps(self.device(d, "70B3D50000000002"))),
                            ("log", d.log_text_all())):
            self.assertNotIn(JWT, text, where)
            self.assertNotIn("c2lnbmF0dXJlLXNlY3JldA", text, where)
        self.assertIn("token rejected: bearer ***", d.log_text_all())

    def test_control_characters_from_the_cloud_become_spaces(self):
        """An import refused with a message holding a terminal's escape sequences: tpactl
        activate and tpactl device printed them raw, and the log had them."""
        msg = "bad \x1b]0;PWNED\x07\x1b[2J\x1b[31mred\u009b2J"

        def h(r, path, body):
            if path.startswith(TOKEN_PATH):
                return token_ok(r)
            r.send(400, {"code": "BAD_REQUEST", "message": msg})
        d = self.dx_daemon(self.cloud(h)).start()
        err, params = self.activate(d, "70B3D50000000901")
        self.assertEqual(err, "io.tpad.Station.UpstreamRejected")
        self.assertEqual(params["message"], "bad  ]0;PWNED  [2J [31mred 2J")
        p = d.tpactl("--socket", d.admin, "device", "70B3D50000000901", check=None)
        q = d.tpactl("--socket", d.station, "activate", "--dev-eui", "70B3D50000000902",
                     "--tkm-info", TKM, check=None)
        for where, text in (("tpactl device", p.stdout + p.stderr),
                            ("tpactl activate", q.stdout + q.stderr),
                            ("log", d.log_text_all())):
            self.assertNotIn("\x1b", text, where)
            self.assertNotIn("\u009b", text, where)
        self.assertIn("[31mred", q.stderr)


class TokenEndpoint(Base):
    def test_a_wrong_token_url_is_unavailable_not_a_refused_device(self):
        """404 (a wrong oauth2.token-url), 405 or a redirect: the endpoint is failing
        (UpstreamUnavailable, retryAfter), not TPA refusing the device."""
        for status, body, headers in ((404, {"code": "NOT_FOUND", "message": "no such path"},
                                       ()),
                                      (405, {"code": "METHOD_NOT_ALLOWED"}, (("Allow", "GET"),)),
                                      (302, b"", (("Location", "/login"),))):
            def h(r, path, b, status=status, body=body, headers=headers):
                if path.startswith(TOKEN_PATH):
                    return r.send(status, body, headers)
                r.send(500, {})
            d = self.dx_daemon(self.cloud(h)).start()
            err, params = self.activate(d, "70B3D50000000003")
            self.assertEqual(err, "io.tpad.Station.UpstreamUnavailable", (status, params))
            self.assertIn(f"OAuth2 token request answered HTTP {status}", params["reason"])
            self.assertGreaterEqual(params["retryAfter"], 1)
            o = self.status(d)["upstream"]["oauth2"]
            self.assertIn(f"HTTP {status}", o["failing"])
            self.assertIsNone(o["refused"])
            d.stop()

    def test_a_refused_token_answer_names_the_member(self):
        cases = [({"access_token": "abc", "token_type": "mac"}, 'token_type "mac" is not Bearer'),
                 ({"access_token": "a" * 5000}, "access_token over 4095 characters"),
                 ({"access_token": "abc", "expires_in": "1h"},
                  "expires_in is not a positive whole number of seconds"),
                 ({"token_type": "bearer"}, "no access_token")]
        for body, why in cases:
            def h(r, path, b, body=body):
                if path.startswith(TOKEN_PATH):
                    return r.send(200, body)
                r.send(500, {})
            d = self.dx_daemon(self.cloud(h)).start()
            err, params = self.activate(d, "70B3D50000000801")
            self.assertEqual(err, "io.tpad.Station.UpstreamUnavailable")
            self.assertIn("answered HTTP 200 without a usable access_token: " + why,
                          params["reason"])
            d.stop()
        # expires_in as some servers write it: taken.
        for exp in ("3600", 3600.0):
            def h(r, path, b, exp=exp):
                if path.startswith(TOKEN_PATH):
                    return r.send(200, {"access_token": "abc", "token_type": "bearer",
                                        "expires_in": exp})
                r.send(200, {"ownerToken": "AB" * 16, "ref": "r1"})
            d = self.dx_daemon(self.cloud(h)).start()
            err, params = self.activate(d, "70B3D50000000802")
            self.assertEqual(err, "ok", params)
            d.stop()

    def test_a_token_url_with_a_space_is_refused_at_check_time(self):
        d = self.dx_daemon("http://127.0.0.1:9", conf=f"oauth2.token-url = {TOKEN_PATH}?x=a b\n")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("oauth2.token-url must not hold spaces or control characters", p.stderr)

    def test_an_unreadable_secret_is_shown_as_failing(self):
        """The secret's file made readable by others while tpad runs, and a new token
        needed: every call failed, while Status, tpactl status, the metrics and the log
        said all was well."""
        pki = PKI(os.path.join(self.tmp, "pki"))
        pki.ca("good")
        crt, key = pki.issue("srv", "good", "127.0.0.1", ["IP:127.0.0.1"])
        secret = os.path.join(self.tmp, "sim-secret")
        write_secret(secret, "0123456789abcdef-secret")
        s = self.sim(None, tls_args=["--cert", crt, "--key", key],
                     extra=["--dx-maker", "--oauth2", "--client-id", CLIENT,
                            "--client-secret-file", secret,
                            "--customer-id", "100004242"]).start()
        d = self.dx_daemon(s.url(), conf=("upstream.backoff-max = 1s\n"
                                          f"upstream.ca-file = {pki.path('good.crt')}\n"))
        d.start()
        self.assertEqual(self.activate(d, "70B3D50000000401")[0], "ok")
        os.chmod(d.secret_file, 0o644)
        s.control("POST", "/revoke-tokens")
        err, params = self.activate(d, "70B3D50000000402")
        self.assertEqual(err, "io.tpad.Station.UpstreamUnavailable")
        fix = f"run chmod o-rwx {d.secret_file}"
        self.assertIn(fix, params["reason"])
        up = self.status(d)["upstream"]
        self.assertEqual(up["state"], "down")
        self.assertIn(fix, up["oauth2"]["failing"])
        self.assertNotEqual(d.tpactl("--socket", d.admin, "status", check=None).returncode, 0)
        with d.admin_client() as a:
            m = a.call("io.tpad.Admin.Metrics")["text"]
        self.assertIn("tpad_upstream_up 0", m)
        errs = [x for x in d.log_text_all().splitlines()
                if x.startswith("<3>") and "cannot load the OAuth2 secret" in x]
        self.assertEqual(len(errs), 1, errs)
        # Put right: tokens again, by itself.
        os.chmod(d.secret_file, 0o600)
        wait_for(lambda: self.status(d)["upstream"]["oauth2"]["failing"] is None, 15,
                 "the token endpoint asked again")
        self.assertEqual(self.activate(d, "70B3D50000000403")[0], "ok")
        self.assertIn("OAuth2: the token endpoint gives tokens again", d.log_text_all())


if __name__ == "__main__":
    tpadtest.main()
