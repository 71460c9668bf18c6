"""tpadtest: starts the real tpad (and tpa-sim) on temporary sockets for integration tests.

Paths come from the environment that meson sets: TPAD, TPACTL, TPA_SIM, DELAY_PROXY,
SRC_ROOT, BUILD_ROOT.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

TPAD = os.environ.get("TPAD", "build/daemon/tpad")
TPACTL = os.environ.get("TPACTL", "build/client/tpactl")
TPA_SIM = os.environ.get("TPA_SIM", "build/test/tpa-sim/tpa-sim")
DELAY_PROXY = os.environ.get("DELAY_PROXY", "build/test/tpa-sim/delay-proxy")
SRC_ROOT = os.environ.get("SRC_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

PSK_IDENTITY = "tpad-test-line-1"


class VarlinkError(Exception):
    """An error reply: .error is the error name, .params its parameters."""

    def __init__(self, error, params):
        super().__init__(f"{error} {json.dumps(params)}")
        self.error = error
        self.params = params


class Client:
    """A blocking varlink-style client on a Unix socket (JSON + NUL)."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, params=None, more=False, oneway=False):
        msg = {"method": method}
        if params is not None:
            msg["parameters"] = params
        if more:
            msg["more"] = True
        if oneway:
            msg["oneway"] = True
        self.sock.sendall(json.dumps(msg).encode() + b"\0")

    def recv(self):
        """One reply as a dict; raises EOFError when the server closed."""
        while b"\0" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by tpad")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        self.last = msg
        return json.loads(msg)

    def call(self, method, params=None):
        """Call and return the reply parameters; raise VarlinkError on an error reply."""
        self.send(method, params)
        reply = self.recv()
        if "error" in reply:
            raise VarlinkError(reply["error"], reply.get("parameters", {}))
        return reply.get("parameters", {})

    def call_more(self, method, params=None):
        """Call with more; return the list of all reply parameters."""
        self.send(method, params, more=True)
        out = []
        while True:
            reply = self.recv()
            if "error" in reply:
                raise VarlinkError(reply["error"], reply.get("parameters", {}))
            out.append(reply.get("parameters", {}))
            if not reply.get("continues"):
                return out


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_report(path):
    """The first sanitizer report line in a log file, or None."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if any(m in line for m in SANITIZER_MARKS):
                    return line.strip()
    except FileNotFoundError:
        pass
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_all(sock, size=65536, pause=0.0, until_error=False):
    """Everything sock receives until the peer closes (recv of size bytes at a time, pause
    seconds between them: a slow reader). until_error: an error also ends it (a TLS peer
    that closes without close_notify)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(size)
        except OSError:
            if not until_error:
                raise
            return data
        if not chunk:
            return data
        data += chunk
        if pause:
            time.sleep(pause)


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_port_file(path, timeout=10.0):
    def get():
        try:
            with open(path) as f:
                s = f.read().strip()
            return int(s) if s else None
        except (FileNotFoundError, ValueError):
            return None
    return wait_for(get, timeout, f"port file {path}")


def core_limits(pid):
    """The core file size limit (soft, hard) of process pid, as /proc/PID/limits says."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return tuple(line[len("Max core file size"):].split()[:2])
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


class CoresAllowed:
    """Within it, processes started get the highest core file size limit allowed (a test
    that they turn core files off themselves). Skips when the hard limit is 0."""

    def __init__(self, test):
        self.test = test

    def __enter__(self):
        import resource
        self.old = resource.getrlimit(resource.RLIMIT_CORE)
        if self.old[1] == 0:
            self.test.skipTest("core files are off (hard limit 0) here")
        resource.setrlimit(resource.RLIMIT_CORE, (self.old[1], self.old[1]))
        return self

    def __exit__(self, *exc):
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, self.old)


NOBODY = 65534


def as_nobody(tree):
    """Give tree (a test's directory) to the user nobody, and return a preexec_fn that
    starts a process as nobody: a daemon as it runs under its own user."""
    for root, dirs, files in os.walk(tree):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, NOBODY, NOBODY)

    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return drop


def small_disk(parent, size="2m"):
    """A tmpfs of size mounted at parent/disk (inside a private mount namespace: the disk-full
    tests' inner scripts); None if it cannot be mounted here."""
    disk = os.path.join(parent, "disk")
    os.makedirs(disk, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", disk]).returncode:
        return None
    return disk


def fill(path):
    """Fill the disk path is on (a file written until the disk refuses)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


# test/failalloc: an LD_PRELOAD library that fails one chosen allocation of a daemon (see
# its source). It replaces malloc, so it is not built with sanitizers.
FAILALLOC = os.environ.get("FAILALLOC") or os.path.join(
    os.environ.get("BUILD_ROOT", "build"), "test", "failalloc", "failalloc.so")


def failalloc_usable():
    return os.environ.get("TPAD_SANITIZE", "none") in ("", "none") and os.path.exists(FAILALLOC)


def failalloc_failed(log, n):
    """Whether allocation n failed, by failalloc's line in log (the log written since the
    call began): no line, and the work took fewer than n allocations."""
    return f"failalloc: allocation {n} failed\n" in log


def key_paths(value, at=""):
    """Every key path of a JSON value: "/a", "/a/b", "/list[]/c"."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(f"{at}/{k}")
            out |= key_paths(v, f"{at}/{k}")
    elif isinstance(value, list):
        for v in value:
            out |= key_paths(v, at + "[]")
    return out


def call_failing(sock, method, params, n, more=False, timeout=15):
    """method called on sock with the n-th allocation the daemon makes after reading the call
    failing (the failalloc marker rides in a member of the message that no daemon reads).
    Returns the messages received, each a dict, then "closed" if the connection closed
    before the last one. A message that is not JSON fails (AssertionError)."""
    msg = {"method": method, "parameters": params, "x-failalloc": f"FAILALLOC:{n};"}
    if more:
        msg["more"] = True
    out = []
    with Client(sock, timeout) as c:
        c.send_raw(json.dumps(msg).encode() + b"\0")
        while True:
            try:
                m = c.recv()
            except EOFError:
                return out + ["closed"]
            except ValueError as e:
                raise AssertionError(f"{method}, allocation {n}: a malformed message after "
                                     f"{len(out)}: {e}: {c.last!r}")
            out.append(m)
            if "error" in m or not m.get("continues"):
                return out


def interfaces():
    """The interfaces in proto/, parsed: name -> varlink_idl.Interface."""
    from varlink_idl import Interface
    d = os.path.join(SRC_ROOT, "proto")
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".varlink"):
            with open(os.path.join(d, f)) as fh:
                i = Interface(fh.read())
            out[i.name] = i
    return out


def check_whole_under_failures(case, sock, calls, log_text, alive, limit=1000):
    """For each (method, params, more) of calls: the same call with allocation n = 1, 2, ...
    failing, until n is past the work the call causes (log_text() shows no failure for n).
    Each message received must be whole: a reply fits its method's declared output and has
    every key the same call's message had with nothing failing (the same count of messages
    before it), or an error its interface declares, well formed; or the connection closes.
    A stream may end early, never skip. alive() is called after each call. Returns how
    many allocations each call made (method -> n), so a caller can see the sweep ran."""
    from varlink_idl import IdlError
    ifaces = interfaces()
    swept = {}
    for method, params, more in calls:
        iface = ifaces[method.rsplit(".", 1)[0]]
        args, output = iface.methods[method.rsplit(".", 1)[1]]
        base = call_failing(sock, method, params, 0, more)
        case.assertNotIn("closed", base)
        case.assertFalse(any("error" in m for m in base), base)
        for n in range(1, limit):
            seen = len(log_text())
            got = call_failing(sock, method, params, n, more)
            for i, m in enumerate(got):
                with case.subTest(method=method, allocation=n, message=i, got=m):
                    if m == "closed":
                        continue
                    if "error" in m:
                        err = m["error"]
                        name = err.rsplit(".", 1)[-1]
                        owner = ifaces.get(err.rsplit(".", 1)[0])
                        case.assertIsNotNone(owner, err)
                        case.assertIn(name, owner.errors, err)
                        try:
                            owner.check(m.get("parameters", {}), owner.errors[name], err)
                        except IdlError as e:
                            case.fail(f"not what {err} declares: {e}")
                        continue
                    case.assertLess(i, len(base), "more messages than with nothing failing")
                    try:
                        iface.check(m.get("parameters"), output, method)
                    except IdlError as e:
                        case.fail(f"not what {method} declares: {e}")
                    case.assertLessEqual(key_paths(base[i].get("parameters")),
                                         key_paths(m.get("parameters")), "keys left out")
                    case.assertEqual(bool(m.get("continues")), bool(base[i].get("continues")))
                    if more:  # a stream's messages are the same ones, in the same order
                        case.assertEqual(m.get("parameters"), base[i].get("parameters"))
            alive()
            if not failalloc_failed(log_text()[seen:], n):
                break
        else:
            case.fail(f"{method}: allocations still failing at {n}")
        swept[method] = max(swept.get(method, 0), n - 1)
    return swept


class Sim:
    """tpa-sim on loopback: TLS-PSK by default, certificate TLS (tls_args), or plain HTTP."""

    def __init__(self, workdir, psk_hex, plain=False, extra=(), registry=True, tls_args=None):
        self.workdir = workdir
        self.psk_hex = psk_hex
        self.plain = plain
        self.tls_args = list(tls_args) if tls_args else None
        self.extra = list(extra)
        self.registry = registry
        self.proc = None
        self.port = None
        self.control_port = None
        self.log_path = os.path.join(workdir, "tpa-sim.log")

    def start(self, port=0):
        port_file = os.path.join(self.workdir, "sim.port")
        ctl_file = os.path.join(self.workdir, "sim.ctlport")
        for p in (port_file, ctl_file):
            if os.path.exists(p):
                os.unlink(p)
        psk_file = os.path.join(self.workdir, "sim.psk")
        if self.psk_hex:
            write_secret(psk_file, self.psk_hex)
        args = [TPA_SIM, "--listen", f"127.0.0.1:{port}", "--port-file", port_file,
                "--control", "127.0.0.1:0", "--control-port-file", ctl_file]
        if self.plain:
            args.append("--plain")
        elif self.tls_args:
            args += self.tls_args
        else:
            args += ["--psk-identity", PSK_IDENTITY, "--psk-file", psk_file]
        if self.registry:
            args += ["--registry", os.path.join(self.workdir, "sim-registry.json")]
        args += self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = read_port_file(port_file)
        self.control_port = read_port_file(ctl_file)
        return self

    def url(self):
        return f"{'http' if self.plain else 'https'}://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def control(self, method, path, body=None, ok=(200,)):
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as s:
            data = json.dumps(body).encode() if body is not None else b""
            req = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
            s.sendall(req.encode() + data)
            resp = read_all(s)
        head, _, body = resp.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status not in ok:
            raise AssertionError(f"tpa-sim control {method} {path}: {status} {body!r}")
        return json.loads(body) if body else None

    def counters(self):
        return self.control("GET", "/counters")

    def faults(self, **kw):
        return self.control("POST", "/faults", kw)

    def devices(self):
        return self.control("GET", "/devices")

    def seed(self, dev_eui, join_eui="0" * 16, **key):
        """A device imported elsewhere (another line, the console): tkmInfo= or appKey=."""
        return self.control("POST", "/devices",
                            {"deviceEUI": dev_eui, "joinEUI": join_eui, **key}, ok=(201,))


PGCLUSTER = os.path.join(SRC_ROOT, "test", "pg", "pgcluster.sh")


class PgCluster:
    """A throw-away PostgreSQL cluster (test/pg/pgcluster.sh) in a directory of its own."""

    def __init__(self, workdir, ssl=False):
        self.ssl = ssl
        self.dir = os.path.join(workdir, "pg")
        # The server runs as an unprivileged user: it must reach its directory.
        os.chmod(workdir, 0o755)
        self.uri = None
        self.password = None
        self.n_db = 0

    def _run(self, *args):
        p = subprocess.run(["sh", PGCLUSTER, *args, self.dir], capture_output=True, text=True,
                           timeout=120,
                           env={**os.environ, "PGCLUSTER_SSL": "1" if self.ssl else "0"})
        if p.returncode != 0:
            raise AssertionError(f"pgcluster {args[0]} failed: {p.stderr}")
        return p.stdout.strip()

    def start(self):
        self.uri = self._run("start")
        with open(os.path.join(self.dir, "password")) as f:
            self.password = f.read().strip()
        return self

    def stop(self):
        self._run("stop")

    def kill(self):
        """Stop at once (immediate shutdown), as when the database host fails."""
        self._run("kill")

    def restart(self):
        self._run("restart")

    def _pids(self):
        """The postmaster and every server process under it."""
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            main = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(main)], capture_output=True,
                              text=True).stdout.split()
        return [main] + [int(k) for k in kids]

    def pause(self):
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self):
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def psql(self, sql, db="tpad"):
        """Run sql with psql; returns its output (unaligned, tuples only)."""
        uri = self.uri.replace("/tpad?", f"/{db}?", 1)
        p = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", uri,
                            "-f", "-"], input=sql, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PGPASSWORD": self.password})
        if p.returncode != 0:
            raise AssertionError(f"psql {sql!r}: {p.stderr}")
        return p.stdout.strip()

    def new_database(self, tls=False, ca=None):
        """A fresh empty database; returns its URI (over TCP with verify-full when tls)."""
        self.n_db += 1
        name = f"t{self.n_db}"
        self.psql(f"CREATE DATABASE {name}", db="postgres")
        if tls:
            with open(os.path.join(self.dir, "port")) as f:
                port = f.read().strip()
            ca = ca or os.path.join(self.dir, "ca.crt")
            return (f"postgresql://tpad@localhost:{port}/{name}?sslmode=verify-full"
                    f"&sslrootcert={ca}")
        return self.uri.replace("/tpad?", f"/{name}?", 1)


class Daemon:
    """The real tpad with a temporary config, sockets, store and credentials."""

    def __init__(self, workdir, upstream_url="https://127.0.0.1:9", psk_hex=None,
                 conf_extra="", env=None, pg_url=None, pg_password=None, key_hex=None,
                 instance=None):
        self.workdir = workdir
        self.station = os.path.join(workdir, "station.sock")
        self.admin = os.path.join(workdir, "admin.sock")
        self.store = os.path.join(workdir, "tpad.db")
        self.conf = os.path.join(workdir, "tpad.conf")
        self.psk_hex = psk_hex or secrets.token_hex(16)
        self.psk_file = os.path.join(workdir, "tpa.psk")
        self.key_file = os.path.join(workdir, "store.key")
        self.upstream_url = upstream_url
        self.conf_extra = conf_extra
        self.env = env or {}
        self.proc = None
        self.log_path = os.path.join(workdir, "tpad.log")
        self.pg_url = pg_url
        self.instance = instance
        self.password_file = os.path.join(workdir, "store.password")
        write_secret(self.psk_file, self.psk_hex)
        if key_hex:
            write_secret(self.key_file, key_hex)
        elif not os.path.exists(self.key_file):
            write_secret(self.key_file, secrets.token_hex(32))
        self.has_password = bool(pg_password)
        if pg_password:
            write_secret(self.password_file, pg_password)
        self.write_conf()

    def write_conf(self):
        sections = {
            "station": {"socket": self.station},
            "admin": {"socket": self.admin},
            "upstream": {"url": self.upstream_url, "psk-identity": PSK_IDENTITY,
                         "psk-file": self.psk_file, "backoff-min": "50ms",
                         "backoff-max": "1s", "connect-timeout": "2s",
                         "handshake-timeout": "2s", "request-timeout": "5s"},
            "store": {"path": self.store, "key-file": self.key_file},
        }
        if self.pg_url:
            sections["store"].update({"backend": "postgresql", "url": self.pg_url})
            if self.has_password:
                sections["store"]["password-file"] = self.password_file
        if self.instance:
            sections["store"]["instance"] = self.instance
        # conf_extra: "section.key = value" lines override or add directives.
        for line in self.conf_extra.strip().splitlines():
            if not line.strip():
                continue
            k, v = line.split("=", 1)
            sec, key = k.strip().split(".", 1)
            sections.setdefault(sec, {})[key] = v.strip()
        with open(self.conf, "w") as f:
            for sec, kv in sections.items():
                f.write(f"[{sec}]\n")
                for k, v in kv.items():
                    f.write(f"{k} = {v}\n")
                f.write("\n")

    def start(self, wait=True, args=(), preexec_fn=None):
        env = dict(os.environ)
        env.update(self.env)
        # Readiness comes as READY=1 on a datagram socket we own, as under systemd.
        self.notify_path = os.path.join(self.workdir, "notify.sock")
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.1)
        env["NOTIFY_SOCKET"] = self.notify_path
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TPAD, "--config", self.conf, "--verbose", *args],
                                     env=env, stdout=self.log, stderr=self.log,
                                     preexec_fn=preexec_fn)
        self.notifications = []
        # Read the notify socket all the time, as systemd does: sd_notify() blocks once
        # the socket's queue is full, and a test may run long between wait_notify() calls.
        self.notify_reader = threading.Thread(target=self._read_notify, args=(self.notify,),
                                              daemon=True)
        self.notify_reader.start()
        if wait:
            self.wait_notify("READY=1", 15)
        return self

    def _read_notify(self, sock):
        while True:
            try:
                msg = sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return  # closed by stop() or kill()
            self.notifications.append(msg)

    def wait_notify(self, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(what in n for n in list(self.notifications)):
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"tpad exited with {self.proc.returncode}:\n"
                                     + self.log_text())
            time.sleep(0.02)
        raise AssertionError(f"no {what} from tpad in {timeout}s:\n" + self.log_text())

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except FileNotFoundError:
            return ""

    def log_text_all(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tpad did not stop on SIGTERM:\n" + self.log_text())
        self.proc = None
        self.log.close()
        self.notify.close()
        return rc

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()
            self.notify.close()

    def station_client(self, timeout=30.0):
        return Client(self.station, timeout)

    def admin_client(self, timeout=30.0):
        return Client(self.admin, timeout)

    def tpactl(self, *args, check=None, input=None, timeout=60):
        """Run tpactl; returns CompletedProcess (text)."""
        p = subprocess.run([TPACTL, *args], capture_output=True, text=True, input=input,
                           timeout=timeout)
        if check is not None and p.returncode != check:
            raise AssertionError(f"tpactl {' '.join(args)} exited {p.returncode}, "
                                 f"want {check}:\n{p.stdout}\n{p.stderr}")
        return p


class TpadTestCase(unittest.TestCase):
    """Gives each test a temporary directory and stops what it started.

    With store_backend = "postgresql" (a class attribute, or TPAD_TEST_STORE=postgresql in
    the environment) the class gets a throw-away PostgreSQL cluster and each test a fresh
    database that its daemons share (self.pg_url), one store key for all of them.
    """

    store_backend = os.environ.get("TPAD_TEST_STORE", "sqlite")
    pg_ssl = False  # the cluster also speaks TLS (PgCluster.new_database(tls=True))
    pg = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.store_backend == "postgresql":
            cls.pg_tmp = tempfile.mkdtemp(prefix="tpad-pg-")
            cls.pg = PgCluster(cls.pg_tmp, ssl=cls.pg_ssl).start()

    @classmethod
    def tearDownClass(cls):
        if cls.pg:
            cls.pg.stop()
            if not os.environ.get("KEEP_TMP"):
                shutil.rmtree(cls.pg_tmp, ignore_errors=True)
            cls.pg = None
        super().tearDownClass()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tpad-test-")
        self.daemons = []
        self.sims = []
        self.pg_url = self.pg.new_database() if self.pg else None
        self.store_key = secrets.token_hex(32)

    def tearDown(self):
        failed = False
        for d in self.daemons:
            if d.proc:
                try:
                    d.stop()
                except AssertionError:
                    failed = True
        for s in self.sims:
            s.stop()
        # Under ASan/UBSan a report in any log fails the test that caused it.
        reports = [(p, sanitizer_report(p)) for p in
                   [d.log_path for d in self.daemons] + [s.log_path for s in self.sims]]
        reports = [(p, r) for p, r in reports if r]
        # Secrets never reach a log, in any case and spelling: the PSK, the store key, and
        # every AppKey the cloud holds (the simulators' registries, saved as they stopped).
        app_keys = set()
        for s in self.sims:
            try:
                with open(os.path.join(s.workdir, "sim-registry.json")) as f:
                    devices = json.load(f).get("devices", [])
            except (OSError, ValueError):
                continue
            app_keys.update(d["appKey"].lower() for d in devices if d.get("appKey"))
        for d in self.daemons:
            log = d.log_text_all().lower()
            with open(d.key_file) as f:
                key = f.read().strip().lower()
            named = [("PSK", d.psk_hex.lower()), ("store key", key)]
            named += [("AppKey " + k[:4] + "...", k) for k in sorted(app_keys)]
            for name, secret in named:
                if secret and secret in log:
                    reports.append((d.log_path, f"the {name} appears in the log"))
        if failed or reports or os.environ.get("KEEP_TMP"):
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if reports:
            self.fail("sanitizer report: " + "; ".join(f"{p}: {r}" for p, r in reports))

    def store_sql(self, d, sql):
        """Run sql on d's store, SQLite file or PostgreSQL database; rows as 'a|b' lines."""
        if d.pg_url:
            return self.pg.psql(sql, db=d.pg_url.split("/")[3].split("?")[0])
        return subprocess.run(["sqlite3", d.store], input=sql, capture_output=True, text=True,
                              check=True).stdout.strip()

    def sim(self, psk_hex, **kw):
        d = os.path.join(self.tmp, f"sim{len(self.sims)}")
        os.makedirs(d, exist_ok=True)
        s = Sim(d, psk_hex, **kw)
        self.sims.append(s)
        return s

    def daemon(self, **kw):
        d = os.path.join(self.tmp, f"tpad{len(self.daemons)}")
        os.makedirs(d, exist_ok=True)
        if self.pg_url and "pg_url" not in kw:
            kw.update(pg_url=self.pg_url, pg_password=self.pg.password)
            kw.setdefault("key_hex", self.store_key)
        t = Daemon(d, **kw)
        self.daemons.append(t)
        return t


def main():
    unittest.main(verbosity=2)
