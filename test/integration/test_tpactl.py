"""tpactl as admins expect: help, hints, did-you-mean, socket environment variables, the
wrong socket named, usage errors, health exit statuses, colour and NO_COLOR, the inverted
terminal label, bash completion."""

import os
import pty
import re
import secrets
import select
import shutil
import subprocess
import threading

import tpadtest
from tpadtest import TpadTestCase, wait_for

TKM = "31110123D345666E2DBD"
COMPLETION = os.path.join(tpadtest.SRC_ROOT, "client", "tpactl.bash")


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("TPAD_STATION_SOCKET", None)
    e.pop("TPAD_ADMIN_SOCKET", None)
    e.update(env or {})
    return subprocess.run([tpadtest.TPACTL, *args], capture_output=True, text=True, env=e,
                          timeout=30)


def run_pty(args, env):
    """Run tpactl with stdout on a pseudo-terminal; returns (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(tpadtest.TPACTL, [tpadtest.TPACTL, *args], env)
    out = b""
    while True:
        r, _, _ = select.select([fd], [], [], 10)
        if not r:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, st = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(st), out.decode(errors="replace")


class Secrets(TpadTestCase):
    def test_app_key_hidden_from_ps(self):
        """tpactl activate --app-key HEX: while tpactl waits for tpad, the AppKey is not in
        /proc/PID/cmdline, which every local user (ps) can read."""
        import socket
        path = os.path.join(self.tmp, "station.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        srv.settimeout(20)
        try:
            for form in (["--app-key", "{}"], ["--app-key={}"]):
                key = secrets.token_hex(16)
                args = [a.format(key) for a in form]
                p = subprocess.Popen([tpadtest.TPACTL, "--socket", path, "activate",
                                      "--dev-eui", "70B3D50000000001", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    conn, _ = srv.accept()
                    conn.settimeout(20)
                    got = b""
                    while b"\0" not in got:  # the call is sent: the options were read
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    self.assertIn(key.encode(), got)  # tpad gets it
                    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                        cmdline = f.read()
                    self.assertIn(b"70B3D50000000001", cmdline)
                    self.assertNotIn(key.encode(), cmdline.lower())
                    conn.close()
                finally:
                    p.kill()
                    p.wait()
        finally:
            srv.close()


class Help(TpadTestCase):
    def test_help_and_command_help(self):
        p = run("help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("Station commands", p.stdout)
        for cmd in ("activate", "lookup", "status", "import", "export", "devices", "device",
                    "metrics"):
            for args in (("help", cmd), (cmd, "--help"), ("--help", cmd), (cmd, "-h")):
                with self.subTest(args=args):
                    p = run(*args)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertTrue(p.stdout.startswith(f"Usage: tpactl {cmd}"), p.stdout)
        # A command's help lists its own options, not the others'.
        p = run("lookup", "--help")
        self.assertIn("--dev-eui", p.stdout)
        self.assertIn("--invert", p.stdout)
        self.assertNotIn("--tkm-info", p.stdout)
        p = run("help", "nonsense")
        self.assertEqual(p.returncode, 2)

    def test_errors_have_one_hint_line(self):
        cases = [
            (("statsu",), "unknown command 'statsu'", "Did you mean 'tpactl status'?"),
            (("activat", "--dev-eui", "0123456789ABCDEF"), "unknown command 'activat'",
             "Did you mean 'tpactl activate'?"),
            (("dev",), "unknown command 'dev'", "Did you mean 'tpactl device"),
            (("frobnicate",), "unknown command 'frobnicate'", "Try 'tpactl help'"),
            (("devices", "--state", "bogus"),
             "--state must be PENDING, ISSUED, FAILED, FOREIGN or RETIRED",
             "Try 'tpactl help devices'."),
            (("lookup", "--dev-euii", "0123456789ABCDEF"), "unknown option '--dev-euii'",
             "Did you mean '--dev-eui'?"),
            (("lookup", "--dev-eui", "12"), "--dev-eui must be 16 hexadecimal digits",
             "Try 'tpactl help lookup'."),
            (("retire", "12", "--reason", "x"), "EUI must be 16 hexadecimal digits, not '12'",
             "Try 'tpactl help retire'."),
            (("device", "12"), "EUI must be 16 hexadecimal digits", "Try 'tpactl help device'."),
            (("activate", "--dev-eui", "0123456789ABCDEF", "--app-key", "A9" * 15 + "C"),
             "--app-key must be 32 hexadecimal digits; it has 31 characters (a key is not "
             "shown)", "Try 'tpactl help activate'."),
            (("lookup", "--format", "jpg", "--dev-eui", "0123456789ABCDEF"),
             "--format must be png, svg, zpl, pdf, text or none", "Try 'tpactl help lookup'."),
            (("export", "--format", "text", "--out", "x"), "--format must be png, svg, zpl, pdf or csv",
             "Try 'tpactl help export'."),
            (("status", "--tkm-info", TKM), "status does not take --tkm-info",
             "Try 'tpactl help status'."),
            (("status", "extra"), "status takes no arguments", "Try 'tpactl help status'."),
            (("lookup", "--dev-eui"), "--dev-eui needs a value", "Try 'tpactl help lookup'."),
            (("activate", "--serial", "x"), "activate needs --dev-eui",
             "Try 'tpactl help activate'."),
            ((), "no command given", "Try 'tpactl help'."),
            # Never abbreviated: import's --generate-appkeys is not what was typed.
            (("activate", "--generate-appkey", "--dev-eui", "0123456789ABCDEF"),
             "unknown option '--generate-appkey'", "Did you mean '--generate-app-key'?"),
            (("print", "0123456789ABCDEF", "--copies", "0"),
             "--copies must be between 1 and 100, not '0'", "Try 'tpactl help print'."),
            (("print",), "print takes a DevEUI or --state STATE (a batch), one of them",
             "Try 'tpactl help print'."),
            (("print", "0123456789ABCDEF", "--state", "issued"),
             "print takes a DevEUI or --state STATE (a batch), not both",
             "Try 'tpactl help print'."),
            # A DevEUI given the way the other commands take it.
            (("lookup", "0123456789ABCDEF"), "lookup takes no arguments, not '0123456789ABCDEF'",
             "Give the DevEUI as --dev-eui 0123456789ABCDEF (tpactl help lookup)."),
            (("activate", "0123456789ABCDEF", "--tkm-info", TKM), "activate takes no arguments",
             "Give the DevEUI as --dev-eui 0123456789ABCDEF"),
            (("device", "--dev-eui", "0123456789ABCDEF"), "device does not take --dev-eui",
             "without --dev-eui: tpactl device 0123456789ABCDEF (tpactl help device)."),
            (("retire", "--dev-eui", "0123456789ABCDEF", "--reason", "x"),
             "retire does not take --dev-eui", "without --dev-eui: tpactl retire 0123456789ABCDEF"),
            # A value that looks like an option is a value.
            (("activate", "--serial", "--dev-eui"), "activate needs --dev-eui",
             "Try 'tpactl help activate'."),
            # An empty --socket is no path; an option given twice is a guess to make.
            (("--socket", "", "status"), '--socket needs a path, not ""',
             "Try 'tpactl help status'."),
            (("activate", "--dev-eui", "0123456789ABCDEF", "--dev-eui", "0123456789ABCDEE",
              "--tkm-info", TKM), "--dev-eui given twice: give it once",
             "Try 'tpactl help activate'."),
            (("devices", "--state", "ISSUED", "--state", "PENDING"), "--state given twice",
             "Try 'tpactl help devices'."),
            (("--socket", "/a", "--socket", "/b", "status"), "--socket given twice",
             "Try 'tpactl help status'."),
            # Checked by the protocol's rule, and as text, before anything is sent.
            (("activate", "--dev-eui", "0123456789ABCDEF", "--serial", "S" * 65),
             "--serial must be 1 to 64 of", "Try 'tpactl help activate'."),
            (("backup", b"/var/lib/tpad/copy-\xff.db"),
             "the path is not UTF-8 text", "Try 'tpactl help backup'."),
            (("retire", "0123456789ABCDEF", "--reason", b"bad \xff"),
             "--reason is not UTF-8 text", "Try 'tpactl help retire'."),
        ]
        for args, first, hint in cases:
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                lines = p.stderr.splitlines()
                self.assertEqual(len(lines), 2, p.stderr)
                self.assertTrue(lines[0].startswith("tpactl: "), lines[0])
                self.assertIn(first, lines[0])
                self.assertIn(hint, lines[1])


class Sockets(TpadTestCase):
    def old_tpad(self, answer):
        """A socket answering each call with answer(method, parameters), as a tpad of an
        older version would; its path."""
        import json
        import socket
        path = os.path.join(self.tmp, "old.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        self.addCleanup(srv.close)

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                buf = b""
                with conn:
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                        while b"\0" in buf:
                            msg, buf = buf.split(b"\0", 1)
                            call = json.loads(msg)
                            r = answer(call["method"], call.get("parameters", {}))
                            conn.sendall(json.dumps(r).encode() + b"\0")
        threading.Thread(target=serve, daemon=True).start()
        return path

    def test_environment_and_wrong_socket(self):
        d = self.daemon().start()
        env = {"TPAD_ADMIN_SOCKET": d.admin, "TPAD_STATION_SOCKET": d.station}
        p = run("devices", env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run("lookup", "--dev-eui", "0123456789ABCDEF", env=env)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("NotFound", p.stderr)
        # --socket wins over the environment.
        p = run("--socket", os.path.join(self.tmp, "nope.sock"), "devices", env=env)
        self.assertEqual(p.returncode, 3)
        # An empty variable means the default.
        p = run("devices", env={"TPAD_ADMIN_SOCKET": ""})
        self.assertEqual(p.returncode, 3)
        self.assertIn("/run/tpad/admin.sock", p.stderr)
        # An admin command on the station socket, and the other way round: which to use.
        for args, env2, want in [
                (("devices",), {"TPAD_ADMIN_SOCKET": d.station}, "TPAD_ADMIN_SOCKET"),
                (("--socket", d.station, "status"), {}, "admin socket"),
                (("--socket", d.station, "metrics"), {}, "admin socket"),
                (("--socket", d.station, "export", "--format", "csv", "--out",
                  os.path.join(self.tmp, "x")), {}, "admin socket"),
                (("--socket", d.admin, "lookup", "--dev-eui", "0123456789ABCDEF"), {},
                 "station socket")]:
            with self.subTest(args=args):
                p = run(*args, env=env2)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("tpactl: ", p.stderr)
                self.assertIn(want, p.stderr)
                self.assertNotIn("MethodNotFound", p.stderr)

    def test_a_path_that_is_no_socket(self):
        """--socket naming the config file or the run directory: connect() is refused as
        at a stale socket, but tpad may well be running: tpactl says the path is no
        socket, not that tpad is not running."""
        conf = os.path.join(self.tmp, "tpad.conf")
        with open(conf, "w") as f:
            f.write("[station]\n")
        for path, kind in ((conf, "a regular file"), (self.tmp, "a directory")):
            for args, which in ((("status",), "admin"),
                                (("lookup", "--dev-eui", "0123456789ABCDEF"), "station")):
                with self.subTest(path=path, args=args):
                    p = run("--socket", path, *args)
                    self.assertEqual(p.returncode, 3, p.stderr)
                    self.assertIn(f"{path} is {kind}, not tpad's socket", p.stderr)
                    self.assertIn(f"{which}.socket in tpad.conf", p.stderr)
                    self.assertNotIn("not running", p.stderr)

    def test_a_stale_socket_is_said_once(self):
        """A socket file a killed tpad left: why, and what to do, once each (the station
        commands said it twice, through libtpad-client's words and tpactl's)."""
        import socket
        path = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        for args in (("status",), ("lookup", "--dev-eui", "0123456789ABCDEF")):
            with self.subTest(args=args):
                p = run("--socket", path, *args)
                self.assertEqual(p.returncode, 3, p.stderr)
                self.assertEqual(p.stderr.splitlines(), [
                    f"tpactl: cannot connect to {path}: Connection refused",
                    "Nothing listens there: tpad is not running (systemctl start tpad)."])

    def test_a_value_the_call_cannot_carry_is_a_usage_error(self):
        """A --reason over Retire's 200 characters is refused by tpactl, exit 2, before it
        is sent: one over limits.max-message was answered by a closed connection only."""
        d = self.daemon().start()
        for reason in ("r" * 201, "r" * 70000):
            p = d.tpactl("--socket", d.admin, "retire", "0123456789ABCDEF", "--reason", reason)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("reason must be 1 to 200", p.stderr)
            self.assertNotIn("Connection reset", p.stderr)
        self.assertNotIn("Retire", d.log_text())

    def test_status_of_a_tpad_that_does_not_answer(self):
        """A tpad that is stopped (SIGSTOP, a debugger) takes the connection in its
        backlog and never answers: status and metrics, which check scripts run, give up
        after 10 s with a non-zero status instead of hanging."""
        import signal
        import time
        d = self.daemon().start()
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            for args in (("status",), ("metrics",)):
                with self.subTest(args=args):
                    t0 = time.monotonic()
                    p = run("--socket", d.admin, *args)
                    self.assertLess(time.monotonic() - t0, 20)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn(f"tpad did not answer within 10 s on {d.admin}", p.stderr)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        self.assertEqual(run("--socket", d.admin, "devices").returncode, 0)

    def test_older_tpad_without_the_method(self):
        """A tpad older than tpactl (a rollback, a line not upgraded yet) answers a newer
        admin method MethodNotFound on its admin socket: tpactl says that tpad does not
        know it, not that the admin socket is the station socket."""
        def answer(method, params):
            if method == "org.varlink.service.GetInfo":
                return {"parameters": {"vendor": "tpad", "product": "tpad",
                                       "version": "0.0.9", "url": "",
                                       "interfaces": ["org.varlink.service", "io.tpad.Admin"]}}
            return {"error": "org.varlink.service.MethodNotFound",
                    "parameters": {"method": method}}
        path = self.old_tpad(answer)
        for args in (("print", "0123456789ABCDEF"), ("backup", os.path.join(self.tmp, "b")),
                     ("devices",)):
            with self.subTest(args=args):
                p = run("--socket", path, *args)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("(version 0.0.9) does not know io.tpad.Admin.", p.stderr)
                self.assertIn("older than this tpactl", p.stderr)
                self.assertNotIn("station socket", p.stderr)

    def test_older_tpad_that_does_not_print(self):
        """An older tpad ignores print (unknown parameters are ignored): activate --print
        must not end 0 as if the label were printed."""
        dev = {"devEUI": "0123456789ABCDEF", "joinEUI": "0000000000000001",
               "profileId": "00000000", "ownerToken": "00112233445566778899AABBCCDDEEFF",
               "state": "ISSUED", "qrText": "LW:D0:X", "source": "live"}
        path = self.old_tpad(lambda method, params: {"parameters": {"device": dev}})
        for args in (("activate", "--dev-eui", "0123456789ABCDEF", "--tkm-info",
                      "00112233445566778899", "--print"),
                     ("lookup", "--dev-eui", "0123456789ABCDEF", "--printer", "zebra"),
                     ("--json", "lookup", "--dev-eui", "0123456789ABCDEF", "--copies", "2")):
            with self.subTest(args=args):
                p = run("--socket", path, *args, "--format", "none")
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("0123456789ABCDEF", p.stdout)
                self.assertIn("tpad did not print the label", p.stderr)
                self.assertIn("the device is ISSUED", p.stderr)


class Health(TpadTestCase):
    def test_status_exit_statuses_and_colour(self):
        # The cloud unreachable: 4, and the breaker opening: 5.
        d = self.daemon(conf_extra="upstream.sessions = 1\nupstream.breaker-threshold = 2\n"
                                   "upstream.breaker-cooldown = 1h").start()
        p = d.tpactl("--socket", d.admin, "status")
        self.assertIn(p.returncode, (4, 5), p.stdout + p.stderr)

        def breaker_open():
            return d.tpactl("--socket", d.admin, "status").returncode == 5
        wait_for(breaker_open, 20, "the breaker to open")
        p = d.tpactl("--socket", d.admin, "status", "--json", check=5)
        self.assertIn('"breaker": "open"', p.stdout.replace('":"', '": "'))
        # No colour into a pipe.
        self.assertNotIn("\033[", d.tpactl("--socket", d.admin, "status").stdout)
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR",)}
        env["TERM"] = "xterm"
        st, out = run_pty(["--socket", d.admin, "status"], env)
        self.assertEqual(st, 5)
        self.assertIn("\033[31mopen\033[0m", out)
        env["NO_COLOR"] = "1"
        st, out = run_pty(["--socket", d.admin, "status"], env)
        self.assertEqual(st, 5)
        self.assertNotIn("\033[", out)

    def test_status_healthy_is_zero(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 2").start()
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15,
                 "a healthy status")
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        env["TERM"] = "xterm"
        st, out = run_pty(["--socket", d.admin, "status"], env)
        self.assertEqual(st, 0)
        self.assertIn("\033[32mok\033[0m", out)
        self.assertIn("\033[32mclosed\033[0m", out)
        # The terminal label, and the same inverted for dark terminals.
        with d.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": "0123456789ABCDEF", "tkmInfo": TKM})
        normal = d.tpactl("--socket", d.station, "lookup", "--dev-eui", "0123456789ABCDEF",
                          "--format", "text", check=0).stdout
        inv = d.tpactl("--socket", d.station, "lookup", "--dev-eui", "0123456789ABCDEF",
                       "--format", "text", "--invert", check=0).stdout
        swap = str.maketrans({" ": "\u2588", "\u2588": " ", "\u2580": "\u2584",
                              "\u2584": "\u2580"})
        qr_lines = [ln for ln in normal.splitlines() if set(ln) <= set(" \u2580\u2584\u2588")
                    and ln]
        inv_lines = [ln for ln in inv.splitlines() if set(ln) <= set(" \u2580\u2584\u2588")
                     and ln]
        self.assertGreater(len(qr_lines), 10)
        self.assertEqual([ln.translate(swap) for ln in qr_lines], inv_lines)


class StoreCopy(TpadTestCase):
    """tpactl store copy --to: only a PostgreSQL target, and a clear refusal when there is
    no SQLite store to copy."""

    def test_only_a_postgresql_target(self):
        d = self.daemon()
        for to in ("/tmp/back.db", "mysql://a/b", "tpad", "postgresq://tpad:s3cret@db/tpad"):
            p = run("store", "copy", "--to", to, "--config", d.conf, "--tpad", tpadtest.TPAD)
            self.assertEqual(p.returncode, 2, (to, p.stdout, p.stderr))
            self.assertIn("takes a PostgreSQL database", p.stderr)
            self.assertNotIn("s3cret", p.stderr)  # a mistyped scheme: never echoed
            self.assertNotIn("copied", p.stdout)

    def test_a_configuration_already_on_postgresql(self):
        d = self.daemon(pg_url="postgresql://tpad@127.0.0.1:1/tpad")
        self.assertFalse(os.path.exists(d.store))
        p = run("store", "copy", "--to", "postgresql://tpad@127.0.0.1:1/other", "--config",
                d.conf, "--tpad", tpadtest.TPAD)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("No such file or directory", p.stderr)
        self.assertIn("store.backend is already postgresql", p.stderr)
        self.assertNotIn("copied", p.stdout)
        self.assertFalse(os.path.exists(d.store + ".lock"))

    def test_restore_runs_tpad_restore_store(self):
        """tpactl store restore FILE, tpad stopped: the store is the copy again, the one it
        replaced kept; misused, a usage error naming what to give."""
        d = self.daemon().start()
        copy = os.path.join(self.tmp, "copy.db")
        d.tpactl("--socket", d.admin, "backup", copy, check=0)
        p = run("store", "restore", copy, "--config", d.conf, "--tpad", tpadtest.TPAD)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("in use by another tpad", p.stderr)
        d.stop()
        p = run("store", "restore", copy, "--config", d.conf, "--tpad", tpadtest.TPAD)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(f"{d.store} restored from {copy}", p.stdout)
        self.assertIn(f"kept as {d.store}.before-restore-", p.stdout)
        for args, why in [(["restore"], "needs the copy's FILE"),
                          (["restore", copy, "--to", "postgresql://x/y"], "takes no --to"),
                          (["copy", copy, "--to", "postgresql://x/y"], "takes no file"),
                          (["back"], "two actions, copy and restore")]:
            with self.subTest(args=args):
                p = run("store", *args, "--config", d.conf, "--tpad", tpadtest.TPAD)
                self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
                self.assertIn(why, p.stderr)


class Top(TpadTestCase):
    """tpactl top in a real terminal: tmux runs it, send-keys types, capture-pane reads."""

    def tmux(self, *args, check=True):
        p = subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                           timeout=20)
        if check and p.returncode != 0:
            raise AssertionError(f"tmux {args}: {p.stderr}")
        return p

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top").stdout

    def test_top_live_view_under_tmux(self):
        self.assertTrue(shutil.which("tmux"), "tmux is missing: scripts/deps.sh installs it")
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 2").start()
        wait_for(lambda: d.tpactl("--socket", d.admin, "status").returncode == 0, 15, "ready")
        self.sock = f"tpad-top-{os.getpid()}"
        status_file = os.path.join(self.tmp, "top.status")
        cmd = (f"TPAD_ADMIN_SOCKET={d.admin} {tpadtest.TPACTL} top --interval 0.2; "
               f"echo $? > {status_file}; sleep 30")
        self.tmux("new-session", "-d", "-s", "top", "-x", "110", "-y", "30", cmd)
        self.addCleanup(self.tmux, "kill-server", check=False)
        wait_for(lambda: "Activations" in self.screen(), 10, "the first frame")
        first = self.screen()
        self.assertIn("Cloud", first)
        self.assertIn("breaker closed", first)
        self.assertIn("sessions 2/2 up", first)
        self.assertIn("Store", first)
        self.assertIn("Printers", first)
        self.assertIn("q quit", first)
        # Activations and a refused one show up: rate, totals, errors by name.
        stop = threading.Event()

        def station():
            with d.station_client() as c:
                i = 0
                while not stop.is_set():
                    c.call("io.tpad.Station.Activate",
                           {"devEUI": f"00DD{i:012X}", "tkmInfo": TKM})
                    i += 1
        t = threading.Thread(target=station)
        t.start()
        try:
            with d.station_client() as c:
                c.call("io.tpad.Station.Activate", {"devEUI": "00EE000000000001",
                                                    "tkmInfo": TKM})
                with self.assertRaises(tpadtest.VarlinkError):
                    c.call("io.tpad.Station.Activate", {"devEUI": "00EE000000000001",
                                                        "tkmInfo": "31110123D345666E0000"})

            def busy_frame():
                scr = self.screen()
                m = re.search(r"Activations\s+([0-9.]+) /s\s+total (\d+)", scr)
                return scr if m and float(m.group(1)) > 0 and int(m.group(2)) > 5 else None
            scr = wait_for(busy_frame, 10, "a frame with activations per second")
            self.assertRegex(scr, r"Errors\s+conflict 1")
        finally:
            stop.set()
            t.join()
        # Redrawn in place: the screen holds one frame, not a scroll of them.
        self.assertEqual(self.screen().count("Activations"), 1)
        # tpad gone: the frame says why it cannot connect, and goes on trying.
        d.stop()
        scr = wait_for(lambda: (lambda x: x if "cannot connect to" in x else None)(
            self.screen()), 10, "a frame without tpad")
        self.assertIn("not reachable", scr)
        self.assertRegex(scr, r"cannot connect to \S+: (No such file or directory|"
                              r"Connection refused) \(is tpad running\?\)")
        # q quits with status 0 and gives the terminal back.
        self.tmux("send-keys", "-t", "top", "q")

        def exit_status():  # the shell creates the file before echo writes to it
            if os.path.exists(status_file):
                with open(status_file) as f:
                    return f.read().strip() or None
        self.assertEqual(wait_for(exit_status, 5, "top to quit"), "0")
        self.assertNotIn("Activations", self.screen())

    def test_top_needs_a_terminal(self):
        d = self.daemon().start()
        p = d.tpactl("--socket", d.admin, "top", check=2)
        self.assertIn("needs a terminal", p.stderr)
        d.tpactl("--socket", d.admin, "top", "--interval", "0", check=2)


class Completion(TpadTestCase):
    def complete(self, line):
        """Run the completion function for a command line; returns the candidates."""
        script = f"""
source {COMPLETION}
COMP_LINE={line!r}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
_tpactl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10,
                           cwd=self.tmp)
        self.assertEqual(p.returncode, 0, p.stderr)
        return set(p.stdout.split())

    def test_completion(self):
        self.assertTrue(shutil.which("bash"))
        self.assertIn("status", self.complete("tpactl st"))
        self.assertEqual(self.complete("tpactl dev"), {"devices", "device"})
        self.assertIn("--dev-eui", self.complete("tpactl lookup --"))
        self.assertNotIn("--tkm-info", self.complete("tpactl lookup --"))
        self.assertEqual(self.complete("tpactl devices --state "),
                         {"PENDING", "ISSUED", "FAILED", "FOREIGN", "RETIRED"})
        self.assertEqual(self.complete("tpactl export --format "), {"png", "svg", "zpl", "pdf", "csv"})
        self.assertEqual(self.complete("tpactl metrics --format "), {"openmetrics", "prometheus"})
        self.assertIn("--ignore-unknown-columns", self.complete("tpactl import --"))
        self.assertIn("uplinks", self.complete("tpactl as "))
        self.assertIn("--payload", self.complete("tpactl as send --"))
        # An option's value is not offered option names; as keygen --out takes a file.
        for line in ("tpactl as send --port ", "tpactl as send --payload ",
                     "tpactl as import-astk --label ", "tpactl retire --reason "):
            self.assertEqual(self.complete(line), set(), line)
        with open(os.path.join(self.tmp, "as-rsa-key.pem"), "w"):
            pass
        self.assertEqual(self.complete("tpactl as keygen --out as-"), {"as-rsa-key.pem"})
        self.assertNotIn("as-rsa-key.pem", self.complete("tpactl export --out as-"))
        self.assertEqual(self.complete("tpactl store "), {"copy", "restore"})
        self.assertEqual(self.complete("tpactl store restore --"),
                         {"--config", "--tpad", "--socket", "--json", "--help", "--version"})
        self.assertEqual(self.complete("tpactl store copy --"),
                         {"--to", "--config", "--tpad", "--socket", "--json", "--help",
                          "--version"})
        # Every command in tpactl's help is completed.
        usage = run("--help").stdout
        import re
        cmds = set(re.findall(r"(?m)^  ([a-z]+) ", usage))
        self.assertLessEqual(cmds, self.complete("tpactl "))


if __name__ == "__main__":
    tpadtest.main()
