"""Integration tests of the tpad core: sockets, protocol, limits, config, systemd, tpactl."""

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time

import tpadtest
from tpadtest import Client, TpadTestCase, VarlinkError, read_all, wait_for


class Foundation(TpadTestCase):
    def test_get_info_both_sockets(self):
        d = self.daemon().start()
        with d.station_client() as c:
            info = c.call("org.varlink.service.GetInfo")
            self.assertEqual(info["product"], "tpad")
            self.assertEqual(info["interfaces"], ["org.varlink.service", "io.tpad.Station"])
        with d.admin_client() as c:
            info = c.call("org.varlink.service.GetInfo")
            self.assertEqual(info["interfaces"], ["org.varlink.service", "io.tpad.Admin"])

    def test_interface_description(self):
        d = self.daemon().start()
        with d.station_client() as c:
            desc = c.call("org.varlink.service.GetInterfaceDescription",
                          {"interface": "io.tpad.Station"})["description"]
            self.assertIn("interface io.tpad.Station", desc)
            self.assertIn("method Activate(", desc)
            with self.assertRaises(VarlinkError) as e:
                c.call("org.varlink.service.GetInterfaceDescription",
                       {"interface": "io.tpad.Admin"})
            self.assertEqual(e.exception.error, "org.varlink.service.InterfaceNotFound")
        with d.admin_client() as c:
            desc = c.call("org.varlink.service.GetInterfaceDescription",
                          {"interface": "io.tpad.Admin"})["description"]
            self.assertIn("method Status(", desc)

    def test_unknown_method_and_admin_on_station(self):
        d = self.daemon().start()
        with d.station_client() as c:
            for m in ("io.tpad.Station.Nope", "io.tpad.Admin.Status", "io.tpad.Admin.Import"):
                with self.assertRaises(VarlinkError) as e:
                    c.call(m)
                self.assertEqual(e.exception.error, "org.varlink.service.MethodNotFound", m)
                self.assertEqual(e.exception.params.get("method"), m)
            # The connection is still good after errors.
            self.assertEqual(c.call("org.varlink.service.GetInfo")["product"], "tpad")

    def test_wrong_parameter_type(self):
        d = self.daemon().start()
        with d.station_client() as c:
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Station.Lookup", {"devEUI": 42})
            self.assertEqual(e.exception.error, "io.tpad.Station.InvalidParameter")
            self.assertEqual(e.exception.params["parameter"], "devEUI")
            with self.assertRaises(VarlinkError) as e:
                c.call("io.tpad.Station.Activate", {"devEUI": "0123456789ABCDEF",
                                                    "qr": {"scale": "big"}})
            self.assertEqual(e.exception.params["parameter"], "qr.scale")

    def test_invalid_json_keeps_connection(self):
        d = self.daemon().start()
        with d.station_client() as c:
            c.send_raw(b"{not json\0")
            r = c.recv()
            self.assertEqual(r["error"], "org.varlink.service.InvalidParameter")
            c.send_raw(b"[1,2]\0")
            self.assertIn("error", c.recv())
            self.assertEqual(c.call("org.varlink.service.GetInfo")["product"], "tpad")

    def test_replies_in_call_order(self):
        d = self.daemon().start()
        with d.admin_client() as c:
            # Several calls in one write; replies must come back in the same order.
            batch = b""
            for i in range(20):
                m = "org.varlink.service.GetInfo" if i % 2 else "io.tpad.Admin.Status"
                batch += json.dumps({"method": m}).encode() + b"\0"
            c.send_raw(batch)
            for i in range(20):
                r = c.recv()["parameters"]
                self.assertIn("product" if i % 2 else "uptime", r)

    def test_half_closed_client_gets_every_answer(self):
        """A client that sends its calls and shuts its side (printf ... | socat) still
        gets every answer, those made later (the store, Status's count) included; then
        the connection closes."""
        d = self.daemon().start()
        calls = [("io.tpad.Admin.Status", {}), ("org.varlink.service.GetInfo", {}),
                 ("io.tpad.Admin.GetDevice", {"devEUI": "70B3D5000000AB01"}),
                 ("io.tpad.Admin.ListDevices", {})]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(d.admin)
        s.sendall(b"".join(json.dumps({"method": m, "parameters": p}).encode() + b"\0"
                           for m, p in calls))
        s.shutdown(socket.SHUT_WR)
        data = read_all(s)
        s.close()
        replies = [json.loads(m) for m in data.split(b"\0") if m]
        self.assertEqual(len(replies), 4, replies)
        self.assertIn("uptime", replies[0]["parameters"])
        self.assertEqual(replies[1]["parameters"]["product"], "tpad")
        self.assertEqual(replies[2]["error"], "io.tpad.Admin.NotFound")
        self.assertEqual(replies[3]["parameters"]["devices"], [])
        with d.admin_client() as a:  # and the connection is gone
            wait_for(lambda: a.call("io.tpad.Admin.Status")["connections"]["admin"] == 1, 5,
                     "the half-closed connection closed")

    @staticmethod
    def pipelined_status(d, n):
        """A client of d's admin socket with a small receive buffer that has sent n Status
        calls in one write and read nothing yet."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(d.admin)
        s.sendall((json.dumps({"method": "io.tpad.Admin.Status"}).encode() + b"\0") * n)
        return s

    def test_half_closed_client_that_reads_slowly_gets_every_answer(self):
        """Many answers to a half-closed client that starts reading late and reads slowly:
        all of them arrive (the connection is not cut while they are being written)."""
        d = self.daemon().start()
        n = 400
        s = self.pipelined_status(d, n)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.6)
        data = read_all(s, 8192, pause=0.005)
        s.close()
        replies = [json.loads(m) for m in data.split(b"\0") if m]
        self.assertEqual(len(replies), n)
        self.assertTrue(all("uptime" in r["parameters"] for r in replies))

    def test_a_slow_reader_is_not_cut_while_its_replies_are_being_written(self):
        """limits.idle-timeout closes a client with nothing going on, not one still reading
        the replies to its calls, however slowly."""
        d = self.daemon(conf_extra="limits.idle-timeout = 300ms").start()
        n = 400
        s = self.pipelined_status(d, n)
        data = b""
        while data.count(b"\0") < n:
            chunk = s.recv(8192)
            if not chunk:
                break
            data += chunk
            time.sleep(0.01)
        s.close()
        self.assertEqual(data.count(b"\0"), n)

    def test_oversized_message_closes_only_offender(self):
        d = self.daemon().start()
        with d.station_client() as good, d.station_client() as bad:
            chunk = b"x" * 65536
            try:
                for _ in range(16):
                    bad.send_raw(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            with self.assertRaises((EOFError, ConnectionResetError)):
                bad.recv()
            self.assertEqual(good.call("org.varlink.service.GetInfo")["product"], "tpad")
        with d.admin_client() as a:
            self.assertGreaterEqual(a.call("io.tpad.Admin.Status")["limitsHit"]["maxMessage"], 1)

    def test_300_idle_clients_then_new_client(self):
        d = self.daemon(conf_extra="limits.max-clients-per-process = 400").start()
        idle = [d.station_client() for _ in range(300)]
        try:
            with d.station_client() as c:
                self.assertEqual(c.call("org.varlink.service.GetInfo")["product"], "tpad")
            with d.admin_client() as a:
                st = a.call("io.tpad.Admin.Status")
                self.assertEqual(st["connections"]["station"], 300)
        finally:
            for c in idle:
                c.close()

    def test_max_clients_and_idle_timeout(self):
        d = self.daemon(conf_extra="limits.max-clients = 3\nlimits.idle-timeout = 400ms").start()
        a = d.admin_client()
        s1, s2 = d.station_client(), d.station_client()
        extra = d.station_client()
        r = extra.recv()
        self.assertEqual(r["error"], "io.tpad.Station.Busy")
        extra.close()
        # Idle clients are closed after the idle timeout.
        with self.assertRaises(EOFError):
            s1.recv()
        s1.close()
        s2.close()
        with d.admin_client() as a2:
            st = a2.call("io.tpad.Admin.Status")
            self.assertGreaterEqual(st["limitsHit"]["maxClients"], 1)
            self.assertGreaterEqual(st["limitsHit"]["idleTimeout"], 1)
        a.close()

    def test_stations_cannot_take_the_admin_slots(self):
        """Stations of any number of users together get limits.max-clients less the slots
        kept for the admin socket (an eighth, 1 to 16)."""
        d = self.daemon(conf_extra="limits.max-clients = 16\nlimits.max-clients-per-uid = 16\n"
                                   "limits.max-clients-per-process = 16").start()
        stations = [d.station_client() for _ in range(15)]
        for c in stations[:14]:
            c.call("org.varlink.service.GetInfo")
        self.assertEqual(stations[14].recv()["error"], "io.tpad.Station.Busy")
        admins = [d.admin_client(), d.admin_client()]
        for a in admins:
            self.assertIn("limitsHit", a.call("io.tpad.Admin.Status"))
        self.assertIn("kept for the admin socket", d.log_text())
        for c in stations + admins:
            c.close()

    def test_out_of_file_descriptors(self):
        """Accept pauses on EMFILE instead of spinning, and resumes when fds free up."""
        import resource
        d = self.daemon().start(preexec_fn=lambda: resource.setrlimit(
            resource.RLIMIT_NOFILE, (48, 48)))
        clients = []
        try:
            for _ in range(60):
                clients.append(d.station_client(timeout=2))
            wait_for(lambda: "cannot accept clients, pausing" in d.log_text(), 10,
                     "the EMFILE pause")
            # Paused, not spinning: under a third of a core over two pauses.
            def cpu_s():
                f = open(f"/proc/{d.proc.pid}/stat").read().rsplit(")", 1)[1].split()
                return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            c0 = cpu_s()
            time.sleep(2.2)
            self.assertLess(cpu_s() - c0, 0.3)
            # Said once for each run of pauses, not once a second. A run can end early
            # when the upstream pool's reconnects free a descriptor (accepted, then paused
            # again): each run has its "accepting clients again".
            log = d.log_text()
            self.assertEqual(log.count("cannot accept clients"),
                             log.count("accepting clients again") + 1, log)
            self.assertIn("station socket: cannot accept clients", d.log_text())
        finally:
            for c in clients:
                c.close()
        # Once clients leave, tpad accepts again within its one-second pause.
        def served():
            try:
                with d.station_client(timeout=3) as c:
                    return c.call("org.varlink.service.GetInfo")["product"] == "tpad"
            except (OSError, EOFError):
                return False
        wait_for(served, 10, "service after the pause")
        self.assertRegex(d.log_text(), r"station socket: accepting clients again "
                                       r"\(accept\(\) failed (?:[2-9]|[1-9]\d+) times in \d+ s\)")
        self.assertEqual(d.stop(), 0)
        # Limits beyond the open-file limit are named at start, as tpas does.
        self.assertIn("limits.max-clients (1024) and upstream.sessions", d.log_text_all())
        self.assertIn("descriptors, over the open-file limit 48", d.log_text_all())
        self.assertNotIn("open-file limit", self.daemon().start().log_text())

    def test_sigterm_clean_exit(self):
        d = self.daemon().start()
        with d.station_client() as c:
            c.call("org.varlink.service.GetInfo")
        self.assertEqual(d.stop(), 0)
        self.assertFalse(os.path.exists(d.station))
        self.assertFalse(os.path.exists(d.admin))

    def test_no_core_files(self):
        """A core file of tpad would hold the store key, the PSK and AppKeys: tpad turns
        core files off at start, even when started with them on (by hand, ulimit -c)."""
        with tpadtest.CoresAllowed(self):
            self.assertNotEqual(tpadtest.core_limits(os.getpid())[0], "0")
            d = self.daemon().start()
        self.assertEqual(tpadtest.core_limits(d.proc.pid), ("0", "0"))

    def test_not_dumpable(self):
        """Nor a core through a core_pattern pipe, which the core size limit does not stop:
        tpad marks itself not dumpable, which also keeps another process of its user from
        reading its memory and environment (ptrace, /proc/PID/mem, /proc/PID/environ).
        The kernel shows it by giving the files of /proc/PID to root."""
        if os.getuid() != 0:
            self.skipTest("needs root to start tpad as another user")
        d = self.daemon()
        d.start(wait=False, preexec_fn=tpadtest.as_nobody(self.tmp))
        wait_for(lambda: os.path.exists(d.admin), 15, "tpad to listen")
        with open(f"/proc/{d.proc.pid}/status") as f:
            self.assertIn(f"Uid:\t{tpadtest.NOBODY}\t", f.read())
        for f in ("environ", "mem"):
            self.assertEqual(os.stat(f"/proc/{d.proc.pid}/{f}").st_uid, 0, f)

    def test_threads_have_names(self):
        """An admin looking at top -H sees which thread of tpad is busy."""
        d = self.daemon().start()
        names = set()
        for tid in os.listdir(f"/proc/{d.proc.pid}/task"):
            with open(f"/proc/{d.proc.pid}/task/{tid}/comm") as f:
                names.add(f.read().strip())
        self.assertLessEqual({"tpad", "store-writer", "store-reader"}, names)

    def test_stale_socket_removed_and_live_instance_refused(self):
        d = self.daemon()
        # A stale socket file from a crashed run must not stop a start.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(d.station)
        s.close()
        d.start()
        with d.station_client() as c:
            c.call("org.varlink.service.GetInfo")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        # The store's lock is met first: one tpad per SQLite store, naming the owner.
        self.assertIn("is in use by another tpad (pid %d)" % d.proc.pid, p.stderr)
        # With a store of its own, the live socket is what refuses it.
        other = os.path.join(self.tmp, "other.conf")
        with open(d.conf) as f, open(other, "w") as g:
            g.write(f.read().replace(d.store, d.store + ".second"))
        p = subprocess.run([tpadtest.TPAD, "--config", other], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("already listening", p.stderr)
        with d.station_client() as c:
            c.call("org.varlink.service.GetInfo")

    def test_socket_mode(self):
        d = self.daemon(conf_extra="station.mode = 0666\nadmin.mode = 0600").start()
        self.assertEqual(os.stat(d.station).st_mode & 0o777, 0o666)
        self.assertEqual(os.stat(d.admin).st_mode & 0o777, 0o600)

    def test_socket_activation(self):
        d = self.daemon()
        act = os.path.join(self.tmp, "act")
        os.makedirs(act)
        st, ad = os.path.join(act, "st.sock"), os.path.join(act, "ad.sock")
        notify_path = os.path.join(self.tmp, "act-notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(15)
        log = open(os.path.join(self.tmp, "act.log"), "wb")
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", st, "-l", ad, "--fdname=station:admin",
             "-E", f"NOTIFY_SOCKET={notify_path}", tpadtest.TPAD, "--config", d.conf],
            stdout=log, stderr=log)
        try:
            wait_for(lambda: os.path.exists(st) and os.path.exists(ad), what="sockets")
            # The first connection starts tpad; the call is answered once it is up.
            with Client(st) as c:
                c.send("org.varlink.service.GetInfo")
                msgs = []
                while not any("READY=1" in m for m in msgs):
                    msgs.append(notify.recv(4096).decode())
                self.assertIn("io.tpad.Station", c.recv()["parameters"]["interfaces"])
            with Client(ad) as c:
                self.assertIn("uptime", c.call("io.tpad.Admin.Status"))
            # The configured paths were not touched.
            self.assertFalse(os.path.exists(d.station))
            self.assertFalse(os.path.exists(d.admin))
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(20), 0)
            while not any("STOPPING=1" in m for m in msgs):
                msgs.append(notify.recv(4096).decode())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.close()
            log.close()

    def test_watchdog(self):
        d = self.daemon(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""})
        d.env.pop("WATCHDOG_PID")
        d.start()
        d.wait_notify("WATCHDOG=1", 5)
        self.assertTrue(any("STATUS=" in n for n in d.notifications))


class Config(TpadTestCase):
    def run_tpad(self, *args, env=None):
        return subprocess.run([tpadtest.TPAD, *args], capture_output=True, text=True,
                              timeout=20, env=env)

    def test_check_config(self):
        d = self.daemon()
        p = self.run_tpad("--config", d.conf, "--check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("[station]\nsocket = /tmp/x\n\n[limits]\nmax-clients = lots\n")
        p = self.run_tpad("--config", bad, "--check-config")
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"{bad}:5:", p.stderr)
        self.assertIn("limits.max-clients", p.stderr)
        with open(bad, "w") as f:
            f.write("[station]\nsockett = /tmp/x\n")
        p = self.run_tpad("--config", bad, "--check-config")
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"{bad}:2: unknown directive 'station.sockett' (did you mean "
                      "'station.socket'?)", p.stderr)
        p = self.run_tpad("--config", os.path.join(self.tmp, "missing.conf"),
                          "--check-config")
        self.assertEqual(p.returncode, 1)
        p = self.run_tpad("--config", self.tmp, "--check-config")
        self.assertEqual(p.returncode, 1)
        self.assertIn("it is a directory, not a file", p.stderr)

    def test_config_file_without_config_option(self):
        """'tpad /etc/tpad/tpad.conf' (the option forgotten) is a usage error that says
        which option was meant."""
        d = self.daemon()
        for args in ((d.conf,), (d.conf, "--check-config"), ("tpad.conf",)):
            with self.subTest(args=args):
                p = self.run_tpad(*args)
                self.assertEqual(p.returncode, 2)
                self.assertIn(f"unexpected argument '{args[0]}' (did you mean --config "
                              f"{args[0]}?)", p.stderr)
        p = self.run_tpad("start")
        self.assertEqual(p.returncode, 2)
        self.assertIn("unexpected argument 'start'\n", p.stderr)

    def test_missing_key_file_names_its_credential(self):
        """A key file directive naming a file that is not there: the message says which
        secret it was to hold."""
        missing = os.path.join(self.tmp, "no-such-psk")
        for extra, name in ((f"upstream.psk-file = {missing}", "tpa-psk"),
                            (f"store.key-file = {missing}", "store-key")):
            with self.subTest(name=name):
                d = self.daemon(upstream_url="https://127.0.0.1:9", conf_extra=extra)
                p = self.run_tpad("--config", d.conf, "--check-config")
                self.assertEqual(p.returncode, 1)
                self.assertIn(f"{missing} (the credential {name}) does not exist", p.stderr)

    def test_a_secret_written_in_its_file_directive_is_not_echoed(self):
        """The key itself where its file's path belongs (upstream.psk = KEY mistaken for
        upstream.psk-file = KEY): refused without writing the key to the journal."""
        # Base64 can begin with a slash, or two: such a value is no path unless its
        # directory exists (with "//", a random key's first character was a slash one run
        # in 64, and the key was echoed).
        slashed = "/" + base64.b64encode(os.urandom(24)).decode()
        for directive, name, key in (("upstream.psk-file", "tpa-psk", secrets.token_hex(16)),
                                     ("store.key-file", "store-key", secrets.token_hex(32)),
                                     ("upstream.psk-file", "tpa-psk", slashed),
                                     ("upstream.psk-file", "tpa-psk", "/" + slashed)):
            d = self.daemon(upstream_url="https://127.0.0.1:9",
                            conf_extra=f"{directive} = {key}")
            for args in (("--check-config",), ()):
                with self.subTest(name=name, args=args):
                    p = self.run_tpad("--config", d.conf, *args)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn(f"the file directive of credential {name} names no file",
                                  p.stderr)
                    self.assertNotIn(key.lower(), p.stderr.lower())
        # A name without a slash is not named either (it may be a password with a dot):
        # "hunter2.final" or "tpa.psk" alike.
        for value in ("hunter2.final", "missing-tpa.psk"):
            d = self.daemon(upstream_url="https://127.0.0.1:9",
                            conf_extra=f"upstream.psk-file = {value}")
            p = self.run_tpad("--config", d.conf, "--check-config")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("the file directive of credential tpa-psk names no file", p.stderr)
            self.assertNotIn(value, p.stderr)
        # A file that is missing is still named: a relative path with a slash, an absolute
        # path in a directory that exists.
        for path in ("./missing-tpa.psk", os.path.join(self.tmp, "missing-psk")):
            d = self.daemon(upstream_url="https://127.0.0.1:9",
                            conf_extra=f"upstream.psk-file = {path}")
            p = self.run_tpad("--config", d.conf, "--check-config")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(f"{path} (the credential tpa-psk) does not exist", p.stderr)

    def test_check_config_hints_case_and_section_typos(self):
        """A key in capitals and a misspelt type of named section get their hint too."""
        bad = os.path.join(self.tmp, "bad.conf")
        for text, want in [
                ("[upstream]\nURL = https://127.0.0.1\n",
                 "unknown directive 'upstream.URL' (did you mean 'upstream.url'?)"),
                ("[printers.line1]\nurl = socket://127.0.0.1:9100\n",
                 "unknown directive 'printers.line1.url' (did you mean 'printer.line1.url'?)"),
                ("[Printer.line1]\nurl = socket://127.0.0.1:9100\n",
                 "unknown directive 'Printer.line1.url' (did you mean 'printer.line1.url'?)")]:
            with self.subTest(text=text):
                with open(bad, "w") as f:
                    f.write(text)
                p = self.run_tpad("--config", bad, "--check-config")
                self.assertEqual(p.returncode, 1)
                self.assertIn(f"{bad}:2: {want}", p.stderr)

    def test_check_config_value_with_a_comment(self):
        """'#' starts a comment only at the start of a line: a value refused with one after
        it says so."""
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("[upstream]\nsessions = 4  # four\n")
        p = self.run_tpad("--config", bad, "--check-config")
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"{bad}:2: upstream.sessions: '4  # four' must be a whole number (a "
                      "comment goes on a line of its own: '#' after a value is part of it)",
                      p.stderr)

    def test_check_config_catches_what_the_start_would_refuse(self):
        # Each refused at the line that says it, by --check-config as by a start.
        long_sock = "/tmp/" + "s" * 110
        bad = os.path.join(self.tmp, "bad.conf")
        for section, line, want in [
                ("upstream", "url = https://127.0.0.1:99999", "is not https://host[:port]"),
                ("upstream", "url = https://tpa.example.com/api", "with no path"),
                ("upstream", "url = https://line1:S3cretPw@tpa.example.com",
                 "'https://line1:***@tpa.example.com' holds user:password@, which is not "
                 "supported"),
                ("station", "group = no-such-group-here", "is not a group on this machine"),
                ("admin", "group = 4294967295x", "is not a group on this machine"),
                ("station", f"socket = {long_sock}", "longer than the 107 bytes"),
                ("metrics", "listen = localhost", "is not HOST:PORT"),
                ("print", "default = line9", "print.default: no [printer.line9] section")]:
            with self.subTest(line=line):
                with open(bad, "w") as f:
                    f.write(f"# a comment\n[{section}]\n{line}\n")
                for args in (["--check-config"], []):
                    p = self.run_tpad("--config", bad, *args)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn(f"{bad}:3: ", p.stderr)
                    self.assertIn(want, p.stderr)
                    self.assertEqual(p.stderr.count(bad), 1, p.stderr)
                    self.assertNotIn("S3cretPw", p.stderr)

    def test_print_config(self):
        d = self.daemon(conf_extra="limits.idle-timeout = 90s\nqr.ec-level = q")
        p = self.run_tpad("--config", d.conf, "--print-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("[limits]\n", p.stdout)
        self.assertIn("idle-timeout = 90s\n", p.stdout)
        self.assertIn("ec-level = Q\n", p.stdout)
        self.assertIn(f"socket = {d.station}\n", p.stdout)
        # The printed config is itself a valid config with the same values.
        again = os.path.join(self.tmp, "again.conf")
        with open(again, "w") as f:
            f.write(p.stdout)
        p2 = self.run_tpad("--config", again, "--print-config")
        values = lambda text: [l for l in text.splitlines() if not l.startswith("# from ")]
        self.assertEqual(values(p2.stdout), values(p.stdout))
        # Each value says where it came from.
        self.assertRegex(p.stdout, r"# from .*tpad\.conf:\d+\nidle-timeout = 90s\n")
        self.assertIn("# from default\nmax-clients = ", p.stdout)
        self.assertRegex(p2.stdout, r"# from .*again\.conf:\d+\nmax-clients = ")

    def test_check_config_names_the_line_of_what_a_start_would_refuse(self):
        """The checks that need a module (the QR template, the captions' width, the socket
        paths) name their directive and its line as the parser's own errors do; a file in
        a socket's place is found by the check, not reported by the start as an address in
        use, and is left alone."""
        victim = os.path.join(self.tmp, "notes.txt")
        with open(victim, "w") as f:
            f.write("precious\n")
        for extra, want in (
                ("qr.template = ab{devEUI}{ownerToken",
                 r"qr\.template: the '\{' at offset 10 has no '\}'"),
                ("qr.template = {ownerToken}}", r"qr\.template: lone '\}' at offset 12"),
                ("label.caption-1 = " + "W" * 60,
                 r"label\.caption-1: 'W+' is [\d.]+ mm wide"),
                (f"station.socket = {victim}",
                 r"station\.socket: .*notes\.txt exists and is not a socket: move it away")):
            d = self.daemon(conf_extra=extra)
            with open(d.conf) as f:
                line = next(i for i, l in enumerate(f.read().splitlines(), 1)
                            if l.startswith(extra.split(".", 1)[1].split(" ")[0] + " ="))
            p = self.run_tpad("--config", d.conf, "--check-config")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, re.escape(f"{d.conf}:{line}: ") + want)
        p = self.run_tpad("--config", d.conf)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("station.socket: ", p.stderr)
        self.assertNotIn("Address already in use", p.stderr)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_config_files_that_are_not_plain_text(self):
        """A NUL byte ended the text there and what followed was left out without a word;
        a FIFO held --check-config (and a start) for ever; a UTF-8 byte order mark (Notepad
        writes one) made line 1 an error; a group given as a number (which the check
        takes) failed the start as "unknown group"."""
        d = self.daemon()
        with open(d.conf, "rb") as f:
            good = f.read()
        with open(d.conf, "wb") as f:
            f.write(good + b"# note\0\n[limits]\nmax-clients = many\n")
        line = good.count(b"\n") + 1
        p = self.run_tpad("--config", d.conf, "--check-config")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"{d.conf}:{line}: a NUL byte: the file is not text", p.stderr)
        fifo = os.path.join(self.tmp, "fifo.conf")
        os.mkfifo(fifo)
        p = self.run_tpad("--config", fifo, "--check-config")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("it is not a regular file (a FIFO, a device?)", p.stderr)
        with open(d.conf, "wb") as f:
            f.write(b"\xef\xbb\xbf" + good)
        p = self.run_tpad("--config", d.conf, "--check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(d.conf, "wb") as f:
            f.write(good)
        d2 = self.daemon(conf_extra="admin.group = 0").start()
        self.assertEqual(os.stat(d2.admin).st_gid, 0)

    def test_shipped_config_is_valid_once_the_psk_identity_is_set(self):
        """The shipped file leaves the one thing a line must fill in, the PSK identity:
        --check-config says so (start would refuse it too); with it set, the file is valid
        and the credentials a check by hand cannot see are named, not called missing."""
        shipped = os.path.join(tpadtest.SRC_ROOT, "conf", "tpad.conf")
        p = self.run_tpad("--config", shipped, "--check-config")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("the PSK identity (upstream.psk-identity) is not set", p.stderr)
        conf = os.path.join(self.tmp, "tpad.conf")
        with open(shipped) as f, open(conf, "w") as g:
            g.write(f.read().replace("#psk-identity =", "psk-identity = line-1"))
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        p = self.run_tpad("--config", conf, "--check-config", env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration is valid", p.stdout)
        self.assertIn("credential store-key not checked", p.stderr)
        self.assertIn("credential tpa-psk not checked", p.stderr)

    def test_version(self):
        p = self.run_tpad("--version")
        self.assertEqual(p.returncode, 0)
        self.assertTrue(p.stdout.startswith("tpad "))


class Tpactl(TpadTestCase):
    def test_status_human_and_json(self):
        d = self.daemon().start()
        p = d.tpactl("--socket", d.admin, "status", check=4)
        self.assertIn("tpad ", p.stdout)
        self.assertIn("clients:", p.stdout)
        # Options may come after the command.
        p = d.tpactl("status", "--json", "--socket", d.admin, check=4)
        st = json.loads(p.stdout)
        self.assertEqual(st["connections"]["admin"], 1)

    def test_exit_statuses(self):
        d = self.daemon().start()
        p = d.tpactl("--socket", os.path.join(self.tmp, "none.sock"), "status", check=3)
        self.assertIn("does not exist", p.stderr)
        d.tpactl("frobnicate", check=2)
        d.tpactl("status", "--dev-eui", "00", check=2)
        d.tpactl("--socket", d.admin, "status", "extra", check=2)
        # A malformed value is caught before any call: a usage error.
        p = d.tpactl("--socket", d.station, "lookup", "--dev-eui", "XYZ", check=2)
        self.assertIn("--dev-eui must be 16 hexadecimal digits", p.stderr)
        # One tpad refuses: an error reply.
        p = d.tpactl("--socket", d.station, "lookup", "--dev-eui", "0123456789ABCDEF", check=1)
        self.assertIn("NotFound", p.stderr)

    def test_permission_denied_message(self):
        if os.getuid() != 0:
            self.skipTest("needs root to drop privileges")
        d = self.daemon(conf_extra="admin.mode = 0600").start()
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            tpadtest.TPACTL, "--socket", d.admin, "status"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 3)
        self.assertIn("Permission denied", p.stderr)


if __name__ == "__main__":
    tpadtest.main()
