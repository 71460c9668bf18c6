"""Packaging tests: install tree, units (verify, security score), sysusers, tmpfiles, man pages."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

import tpadtest

SRC = tpadtest.SRC_ROOT
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(tpadtest.TPAD)))
MAN_PAGES = {"tpad.8": "man8", "tpactl.1": "man1", "tpad.conf.5": "man5", "tpas.8": "man8"}
UNITS = ("tpad.service", "tpad-station.socket", "tpad-admin.socket")
MAX_EXPOSURE = 1.5


def run(args, **kw):
    """Run a command with a time bound; returns CompletedProcess (text)."""
    kw.setdefault("timeout", 120)
    return subprocess.run(args, capture_output=True, text=True, **kw)


def pkg_var(name, default):
    """A variable of systemd.pc, or default when pkg-config or the file is missing."""
    if not shutil.which("pkg-config"):
        return default
    p = run(["pkg-config", "--variable=" + name, "systemd"])
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else default


def build_options():
    """The build directory's meson options, by name."""
    p = run(["meson", "introspect", BUILD, "--buildoptions"])
    if p.returncode != 0:
        raise AssertionError(f"meson introspect failed:\n{p.stderr}")
    return {o["name"]: o["value"] for o in json.loads(p.stdout)}


def read_unit(path):
    """A unit file as {section: {key: [values...]}} (keys may repeat)."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = out.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(v):
    """A systemd time span like 2s, 60, 500ms or 1min in seconds."""
    m = re.fullmatch(r"(\d+)\s*(ms|s|sec|min|m)?", v)
    if not m:
        raise ValueError(v)
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit in ("min", "m") else n


def roff_text(path):
    """A man page's source with roff escapes reduced to plain text, for name searches."""
    with open(path) as f:
        s = f.read()
    s = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", s)
    s = s.replace("\\-", "-").replace("\\%", "").replace("\\&", "").replace("\\(aq", "'")
    return s


def missing_names(names, text):
    """The names that do not occur in text as whole words."""
    return sorted(n for n in names
                  if not re.search(r"(?<![\w.-])" + re.escape(n) + r"(?![\w-])", text))


def conf_directives():
    """Every directive of conf/tpad.conf as section.key (commented-out lines included)."""
    names, section = [], None
    with open(os.path.join(SRC, "conf", "tpad.conf")) as f:
        for line in f:
            m = re.match(r"\[([a-z0-9-]+)\]\s*$", line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r"[#;]?([a-z][a-z0-9-]*)\s*=", line)
            if m and section:
                names.append(f"{section}.{m.group(1)}")
    return names


def directives_of(*path):
    """Every "section.key" directive name in a config table (limits.* from core/server_conf.h)."""
    with open(os.path.join(SRC, *path)) as f:
        text = f.read()
    if "SERVER_LIMITS_DIRECTIVES(" in text:
        with open(os.path.join(SRC, "core", "server_conf.h")) as f:
            text += f.read()
    return re.findall(r'\.name = "([a-z0-9]+\.[a-z0-9-]+)"', text)


def table_directives():
    """Every directive name in daemon/config.c's table."""
    return directives_of("daemon", "config.c")


def help_text(program):
    """program --help (program: a path, or a list of the path and its arguments)."""
    args = list(program) if isinstance(program, list) else [program]
    p = run(args + ["--help"])
    if p.returncode != 0:
        raise AssertionError(f"{program} --help exited {p.returncode}")
    return p.stdout


def help_options(text):
    """The options a --help text lists: its usage lines and the first column of its option
    lines ("-o, --output FILE" is --output)."""
    lines = [line for line in text.splitlines() if line.startswith(("Usage:", "       tpactl"))]
    lines += [re.split(r"\s{2,}", line.strip())[0] for line in text.splitlines()
              if re.match(r"  -", line)]
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", "\n".join(lines)))


def conf_number(v, kind):
    """A directive's value or bound as the program counts it: durations in ms (a bare number
    is seconds), sizes in bytes, millimetres and plain numbers as they are."""
    m = re.fullmatch(r"(\d+(?:\.\d)?)(ms|s|m|h|K|M)?", v.strip())
    if not m:
        return v.strip()
    n, unit = float(m.group(1)), m.group(2)
    if kind == "duration":
        return n * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, None: 1000}[unit]
    return n * {"K": 1024, "M": 1 << 20, None: 1}[unit]


def value_kind(*values):
    """duration, size or n, from the units of a directive's documented values."""
    text = " ".join(values)
    if re.search(r"\d(ms|s|m|h)\b", text):
        return "duration"
    return "size" if re.search(r"\d[KM]\b", text) else "n"


def run_config(program, conf_text, option):
    """program --config FILE OPTION for a file holding conf_text."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(conf_text)
        f.flush()
        return run([program, "--config", f.name, option])


def print_config(program, conf_text):
    """program --print-config for a file of conf_text, as {section.key: value}; the one
    [printer.NAME] section's keys as printer.key, as the man page names them."""
    p = run_config(program, conf_text, "--print-config")
    if p.returncode != 0:
        raise AssertionError(f"{program} --print-config exited {p.returncode}: {p.stderr}")
    values, section = {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"\[(.+)\]$", line)
        if m:
            section = m.group(1)
        m = re.match(r"([a-z0-9-]+) = ?(.*)$", line)
        if m and section:
            values[re.sub(r"^printer\.[^.]+\.", "printer.", f"{section}.{m.group(1)}")] = \
                m.group(2)
    return values


def shipped_values(name):
    """The value each commented-out directive of conf/NAME shows, by section.key."""
    values, section = {}, None
    with open(os.path.join(SRC, "conf", name)) as f:
        for line in f:
            m = re.match(r"\[([a-z0-9-]+)\]\s*$", line)
            if m:
                section = m.group(1)
            m = re.match(r"#([a-z][a-z0-9-]*) = ?(.*)$", line.rstrip("\n"))
            if m and section:
                values[f"{section}.{m.group(1)}"] = m.group(2)
    return values


def doc_default(text):
    """The value a man page gives after "default" ("" for none or empty)."""
    if re.match(r"default(:| empty)", text):
        return ""
    return re.match(r"default (\S+?)(?:,|;|: | or |$)", text).group(1)


def doc_range(text):
    """(lo, hi) of "LO to HI" or (None, hi) of "at most HI" in a man page's default text."""
    m = re.search(r"(\S+) to (\S+?)(?:[;,)]|$)", text)
    if m:
        return m.group(1), m.group(2)
    m = re.search(r"at most (\S+?)(?:[;,)]|$)", text)
    return (None, m.group(1)) if m else None


def check_documented_directives(case, program, base, base_sets, conf_for, docs, shipped):
    """docs: {name: (type, default text)} from a man page. Each default (but of the names in
    base_sets) is the program's own (--print-config of base) and the shipped file's; a
    numeric directive names its range, and --check-config of conf_for(name, value) takes each
    bound and refuses one step beyond, naming the same bounds."""
    effective = print_config(program, base)
    numeric = ("n", "size", "duration", "mm", "points")
    for name, (typ, text) in docs.items():
        default = doc_default(text)
        if name not in base_sets:
            kind = typ if typ in ("size", "duration") else value_kind(default)
            case.assertIn(name, effective, f"{name} is not a directive of {program}")
            case.assertEqual(conf_number(default, kind), conf_number(effective[name], kind),
                             f"{name}: documented default {default!r}")
            if name in shipped:
                case.assertEqual(conf_number(shipped[name], kind),
                                 conf_number(effective[name], kind),
                                 f"{name}: the shipped file shows {shipped[name]!r}")
        bounds = doc_range(text)
        if typ in numeric or (typ is None and re.fullmatch(r"\d+(ms|s|m|h)?",
                                                           effective.get(name, ""))):
            case.assertIsNotNone(bounds, f"{name}: no documented range")
        if not bounds:
            continue
        kind = typ if typ in ("size", "duration") else value_kind(default, *[b or "" for b in bounds])
        step = 0.1 if typ == "mm" else 1
        unit = {"duration": "ms"}.get(kind, "")
        lo, hi = [conf_number(b, kind) if b else None for b in bounds]
        probes = [(hi, True), (hi + step, False)]
        if lo is not None:
            probes += [(lo, True)] + ([(lo - step, False)] if lo > 0 else [])
        for value, ok in probes:
            v = f"{value:g}{unit}" if step < 1 else f"{int(value)}{unit}"
            p = run_config(program, conf_for(name, v), "--check-config")
            refusal = re.search(rf"{re.escape(name).replace('printer', 'printer[.][a-z]+')}"
                                rf": '{re.escape(v)}' must be .*between (\S+) and (\S+)",
                                p.stderr)
            if ok:
                case.assertIsNone(refusal, f"{name} = {v} is within the documented range")
                continue
            case.assertIsNotNone(refusal, f"{name} = {v} is outside the documented range: "
                                           f"{p.stderr}")
            said = [conf_number(b, kind) for b in refusal.groups()]
            want = [lo if lo is not None else said[0], hi]
            case.assertEqual(said, want, f"{name}: the refusal names other bounds: {p.stderr}")


class InstallTree(unittest.TestCase):
    """meson install --destdir: what lands where, and the units as installed."""

    @classmethod
    def setUpClass(cls):
        cls.dest = tempfile.mkdtemp(prefix="tpad-install-")
        p = run(["meson", "install", "-C", BUILD, "--destdir", cls.dest, "--no-rebuild",
                 "--quiet"], timeout=300)
        if p.returncode != 0:
            raise AssertionError(f"meson install failed:\n{p.stdout}\n{p.stderr}")
        o = build_options()
        prefix = o["prefix"]

        def under(d):
            return os.path.join(prefix, d)
        cls.sbindir = under(o["sbindir"])
        cls.bindir = under(o["bindir"])
        cls.sysconfdir = under(o["sysconfdir"])
        cls.mandir = under(o["mandir"])
        cls.datadir = under(o["datadir"])
        cls.libdir = under(o["libdir"])
        cls.includedir = under(o["includedir"])
        cls.unitdir = o.get("systemdunitdir") or pkg_var("systemdsystemunitdir",
                                                         "/lib/systemd/system")
        cls.sysusersdir = pkg_var("sysusersdir", under("lib/sysusers.d"))
        cls.tmpfilesdir = pkg_var("tmpfilesdir", under("lib/tmpfiles.d"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dest, ignore_errors=True)

    def d(self, *parts):
        """A path inside the install tree."""
        return os.path.join(self.dest, *(p.lstrip("/") for p in parts))

    def unit(self, name):
        return self.d(self.unitdir, name)

    def test_client_library(self):
        """libtpad-client: soname, one header, a pkg-config file that builds the example."""
        lib = self.d(self.libdir, "libtpad-client.so.1.1.0")
        self.assertTrue(os.path.isfile(lib), lib)
        self.assertEqual(os.readlink(self.d(self.libdir, "libtpad-client.so.1")),
                         "libtpad-client.so.1.1.0")
        self.assertTrue(os.path.islink(self.d(self.libdir, "libtpad-client.so")))
        p = run(["objdump", "-p", lib])
        if p.returncode == 0:
            self.assertRegex(p.stdout, r"SONAME\s+libtpad-client\.so\.1")
        header = self.d(self.includedir, "tpad-client.h")
        self.assertTrue(os.path.isfile(header))
        # A static link needs the library's own dependency too.
        static = run(["pkg-config", "--static", "--libs", "tpad-client"],
                     env=self.pkg_config_env())
        self.assertIn("-ljansson", static.stdout.split(), static.stderr)
        p = self.build_installed_example("example_station.c", "tpad-client")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("usage: example-station", p.stderr)

    def test_installed_c_application_example_builds_and_runs(self):
        """example_app.c as installed builds with the cc line of its comment and tpas(8),
        in strict C11 too (-std=c11 hides POSIX's O_CLOEXEC and dprintf unless the file
        asks for them), and runs."""
        p = self.build_installed_example("example_app.c", "tpad-client", "jansson",
                                         args=["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("usage: example-app", p.stdout)

    def pkg_config_env(self):
        """The environment in which pkg-config finds the installed tpad-client.pc."""
        return dict(os.environ, PKG_CONFIG_PATH=self.d(self.libdir, "pkgconfig"),
                    PKG_CONFIG_SYSROOT_DIR=self.dest)

    def build_installed_example(self, source, *packages, args=()):
        """Build share/doc/tpad/examples/source as installed, with cc -std=c11 -Wall
        -Werror and pkg-config's flags for packages, and run it with args."""
        if build_options().get("b_sanitize", "none") != "none":
            self.skipTest("a sanitized library does not link into a plain program")
        env = self.pkg_config_env()
        flags = run(["pkg-config", "--cflags", "--libs", *packages], env=env)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        src = self.d(self.datadir, "doc", "tpad", "examples", source)
        out = os.path.join(self.dest, os.path.splitext(source)[0])
        cc = shutil.which("cc") or shutil.which("gcc")
        p = run([cc, "-std=c11", "-Wall", "-Werror", src, "-o", out, *flags.stdout.split()],
                env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return run([out, *args], env=dict(os.environ, LD_LIBRARY_PATH=self.d(self.libdir)))

    def test_installed_python_examples_run(self):
        """tpad_client.py is installed beside the Python examples, which run from there as
        they are (no PYTHONPATH of the source tree)."""
        examples = self.d(self.datadir, "doc", "tpad", "examples")
        self.assertTrue(os.path.isfile(os.path.join(examples, "tpad_client.py")))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for example in ("example_station.py", "example_app.py"):
            p = run([sys.executable, os.path.join(examples, example), "--help"], env=env,
                    cwd=self.dest)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("usage", p.stdout)

    def test_expected_files(self):
        expected = [self.d(self.sbindir, "tpad"), self.d(self.bindir, "tpactl"),
                    self.d(self.sysconfdir, "tpad", "tpad.conf"),
                    self.d(self.sysusersdir, "tpad.conf"), self.d(self.tmpfilesdir, "tpad.conf")]
        expected += [self.unit(u) for u in UNITS]
        expected += [self.d(self.mandir, sec, page) for page, sec in MAN_PAGES.items()]
        expected += [self.d(self.datadir, "bash-completion", "completions", "tpactl"),
                     self.d(self.datadir, "doc", "tpad", "examples", "tpad-alerts.yml"),
                     self.d(self.datadir, "doc", "tpad", "examples",
                            "tpad-encrypted-credentials.conf")]
        expected += [self.d(self.datadir, "doc", "tpad", "examples", f)
                     for f in ("example_station.c", "example_app.c", "example_station.py",
                               "example_app.py")]
        for path in expected:
            self.assertTrue(os.path.isfile(path), f"{path} not installed")
        for prog in (self.d(self.sbindir, "tpad"), self.d(self.bindir, "tpactl")):
            self.assertTrue(os.stat(prog).st_mode & stat.S_IXUSR, prog)
        # The .in template is configured, never installed raw.
        self.assertFalse(os.path.exists(self.unit("tpad.service.in")))
        # The pages as written, with the configured sysconfdir for /etc.
        for page, sec in MAN_PAGES.items():
            with open(self.d(self.mandir, sec, page)) as a, \
                    open(os.path.join(SRC, "man", page)) as b:
                want = re.sub(r"/etc/(tpad|tpas)\b", rf"{self.sysconfdir}/\1", b.read())
                self.assertEqual(a.read(), want, page)
        with open(self.d(self.sysconfdir, "tpad", "tpad.conf")) as a, \
                open(os.path.join(SRC, "conf", "tpad.conf")) as b:
            self.assertEqual(a.read(), b.read())

    def test_one_configuration_path_everywhere(self):
        """The installed binaries' default configuration, the units, the tmpfiles, the
        encrypted-credentials drop-in and the man pages name the same configured
        sysconfdir (before, the binaries and pages said /etc/tpad while a /usr/local
        install's units used /usr/local/etc/tpad)."""
        for prog, name in (("tpad", "tpad"), ("tpas", "tpas")):
            help_ = run([self.d(self.sbindir, prog), "--help"]).stdout
            default = re.search(r"default (\S+\.conf)\)", help_).group(1)
            self.assertEqual(default, f"{self.sysconfdir}/{name}/{name}.conf", prog)
            svc = read_unit(self.unit(f"{name}.service"))["Service"]
            self.assertEqual(svc["ExecStart"][0].split("--config ", 1)[1], default, prog)
            for cred in svc["LoadCredential"]:
                self.assertTrue(cred.split(":", 1)[1].startswith(
                    os.path.dirname(default) + "/credentials/"), cred)
            with open(self.d(self.tmpfilesdir, f"{name}.conf")) as f:
                dirs = [ln.split()[1] for ln in f if ln.startswith("d ")]
            self.assertIn(os.path.dirname(default) + "/credentials", dirs, prog)
            page = self.d(self.mandir, "man8", f"{name}.8")
            with open(page) as f:
                text = f.read()
            self.assertIn(default, text, page)
            if self.sysconfdir != "/etc":
                self.assertNotRegex(text, rf"(?<![\w/])/etc/{name}\b", page)
        tpactl = run([self.d(self.bindir, "tpactl"), "store", "copy", "--help"]).stdout
        self.assertIn(f"{self.sysconfdir}/tpad/tpad.conf", tpactl)
        with open(self.d(self.datadir, "doc", "tpad", "examples",
                         "tpad-encrypted-credentials.conf")) as f:
            paths = re.findall(r"LoadCredentialEncrypted=[\w-]+:(\S+)", f.read())
        self.assertTrue(paths)
        for path in paths:
            self.assertTrue(path.startswith(f"{self.sysconfdir}/tpad/credentials/"), path)

    def test_one_version_everywhere(self):
        """The version the programs print is the one of the man pages, of the library's
        header and of NEWS.md's newest entry: a release changes them together."""
        p = run([self.d(self.sbindir, "tpad"), "--version"])
        self.assertEqual(p.returncode, 0)
        m = re.match(r"tpad (\d+\.\d+\.\d+)\n", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        version = m.group(1)
        for prog in ("tpas", "tpactl"):
            exe = self.d(self.bindir if prog == "tpactl" else self.sbindir, prog)
            self.assertEqual(run([exe, "--version"]).stdout, f"{prog} {version}\n")
        for page in sorted(p for p in os.listdir(os.path.join(SRC, "man")) if p[-2:-1] == "."):
            with open(os.path.join(SRC, "man", page)) as f:
                th = next(line for line in f if line.startswith(".TH "))
            self.assertIn(f'"tpad {version}"', th, page)
        with open(os.path.join(SRC, "client", "lib", "tpad-client.h")) as f:
            self.assertIn(f'#define TPAD_CLIENT_VERSION "{version}"', f.read())
        with open(os.path.join(SRC, "NEWS.md")) as f:
            self.assertEqual(re.findall(r"^## (\S+)", f.read(), re.M)[0], version)

    def test_installed_programs_run_and_shipped_config_is_valid(self):
        tpad = self.d(self.sbindir, "tpad")
        p = run([tpad, "--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^tpad \d+\.\d+")
        conf = self.d(self.sysconfdir, "tpad", "tpad.conf")
        p = run([tpad, "--config", conf, "--check-config"])
        # The one thing a line must fill in (start would refuse it too), then valid.
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("upstream.psk-identity", p.stderr)
        filled = os.path.join(os.path.dirname(conf), "filled.conf")
        with open(conf) as f, open(filled, "w") as g:
            g.write(f.read().replace("#psk-identity =", "psk-identity = line-1"))
        p = run([tpad, "--config", filled, "--check-config"])
        os.unlink(filled)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration is valid", p.stdout)
        p = run([self.d(self.bindir, "tpactl"), "--version"])
        self.assertEqual(p.returncode, 0)

    def test_service_unit_contents(self):
        u = read_unit(self.unit("tpad.service"))
        svc, unit = u["Service"], u["Unit"]
        self.assertEqual(svc["Type"], ["notify"])
        self.assertEqual(svc["ExecStart"], [
            f"{self.sbindir}/tpad --config {self.sysconfdir}/tpad/tpad.conf"])
        # systemctl reload: a file that would not start fails the reload, then SIGHUP.
        self.assertEqual(svc["ExecReload"], [svc["ExecStart"][0] + " --check-config",
                                             "/bin/kill -HUP $MAINPID"])
        with open(self.unit("tpad.service")) as f:
            self.assertNotRegex(f.read(), r"@[a-z_]+@", "unconfigured @var@ left")
        self.assertEqual(svc["WatchdogSec"], ["30s"])
        self.assertEqual(svc["Restart"], ["on-failure"])
        self.assertEqual((svc["User"], svc["Group"]), (["tpad"], ["tpad"]))
        self.assertEqual(svc["StateDirectory"], ["tpad"])
        self.assertEqual(svc["StateDirectoryMode"], ["0700"])
        self.assertNotIn("RuntimeDirectory", svc)
        creds = {c.split(":", 1)[0]: c.split(":", 1)[1] for c in svc["LoadCredential"]}
        self.assertEqual(set(creds), {"tpa-psk", "store-key", "oauth-secret"})
        for name, path in creds.items():
            self.assertEqual(path, f"{self.sysconfdir}/tpad/credentials/{name}")
        for sock in ("tpad-station.socket", "tpad-admin.socket"):
            self.assertIn(sock, " ".join(unit["Requires"]).split())
            self.assertIn(sock, " ".join(unit["After"]).split())
        # Restarts paced by RestartSec= can never reach the start limit, so a crash loop
        # keeps retrying instead of leaving the unit failed for good.
        interval = seconds(unit["StartLimitIntervalSec"][0])
        burst = int(unit["StartLimitBurst"][0])
        restart = seconds(svc["RestartSec"][0])
        self.assertGreater(restart, 0)
        self.assertGreater(burst, interval / restart + 1)
        self.assertNotIn("PrivateUsers", svc)  # it would hide the stations' uids

    def test_socket_units(self):
        groups = set()
        with open(self.d(self.sysusersdir, "tpad.conf")) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in ("g", "u"):
                    groups.add(fields[1])
        self.assertTrue({"tpad", "tpad-station", "tpad-admin"} <= groups, groups)
        for name, path, group in (("station", "/run/tpad/station.sock", "tpad-station"),
                                  ("admin", "/run/tpad/admin.sock", "tpad-admin")):
            s = read_unit(self.unit(f"tpad-{name}.socket"))["Socket"]
            self.assertEqual(s["ListenStream"], [path])
            self.assertEqual(s["FileDescriptorName"], [name])
            self.assertEqual(s["SocketMode"], ["0660"])
            self.assertEqual(s["SocketGroup"], [group])
            self.assertEqual(s["Service"], ["tpad.service"])

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_systemd_analyze_verify(self):
        # verify checks that ExecStart= and ExecReload= exist on this machine: point a copy
        # of the installed units at the installed binary, and let it find the installed man
        # pages for Documentation=.
        vdir = tempfile.mkdtemp(prefix="tpad-verify-")
        try:
            for u in UNITS:
                shutil.copy(self.unit(u), vdir)
            svc = os.path.join(vdir, "tpad.service")
            with open(svc) as f:
                text = f.read()
            exe = f"ExecStart={self.sbindir}/tpad "
            self.assertIn(exe, text)
            with open(svc, "w") as f:
                # Every command line naming the program (ExecStart=, ExecReload=).
                f.write(text.replace(f"={self.sbindir}/tpad ",
                                     f"={self.d(self.sbindir, 'tpad')} "))
            env = dict(os.environ, MANPATH=self.d(self.mandir), SYSTEMD_LOG_COLOR="0")
            args = ["systemd-analyze", "verify", "--man=yes"] + [
                os.path.join(vdir, u) for u in UNITS]
            p = run(args, env=env)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual((p.stdout + p.stderr).strip(), "")

            # The same check notices a bad line: it is not vacuous.
            with open(svc, "a") as f:
                f.write("\n[Service]\nWatchdogSec=soon\n")
            p = run(args, env=env)
            self.assertIn("soon", p.stdout + p.stderr)
        finally:
            shutil.rmtree(vdir, ignore_errors=True)

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_security_exposure(self):
        p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                 self.unit("tpad.service")], env=dict(os.environ, SYSTEMD_COLORS="0"))
        out = p.stdout + p.stderr
        m = re.search(r"Overall exposure level for tpad\.service:\s*([0-9.]+)", out)
        self.assertIsNotNone(m, out)
        score = float(m.group(1))
        print(f"systemd-analyze security: tpad.service exposure {score}")
        self.assertLessEqual(score, MAX_EXPOSURE, out)
        # Settings that count in full: each line is there and adds no exposure.
        for good in ("ProtectSystem=", "NoNewPrivileges=", "SystemCallFilter=~@privileged",
                     "RestrictAddressFamilies=~AF_PACKET", "MemoryDenyWriteExecute=",
                     "CapabilityBoundingSet=~CAP_SYS_ADMIN", "User=/DynamicUser="):
            m = re.search(r"(?m)^\S+\s+" + re.escape(good) + r"\s.*$", out)
            self.assertIsNotNone(m, good)
            self.assertNotRegex(m.group(0).rstrip(), r"\d\.\d$", good)

    @unittest.skipUnless(shutil.which("systemd-sysusers"), "systemd-sysusers is not installed")
    def test_sysusers_creates_user_and_groups(self):
        root = tempfile.mkdtemp(prefix="tpad-root-")
        try:
            os.makedirs(os.path.join(root, "etc"))
            for f in ("passwd", "group"):
                open(os.path.join(root, "etc", f), "w").close()
            p = run(["systemd-sysusers", "--root", root, self.d(self.sysusersdir, "tpad.conf")])
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(root, "etc", "passwd")) as f:
                users = {line.split(":")[0]: line.split(":") for line in f if line.strip()}
            with open(os.path.join(root, "etc", "group")) as f:
                groups = {line.split(":")[0] for line in f if line.strip()}
            self.assertIn("tpad", users)
            self.assertNotEqual(users["tpad"][2], "0")
            self.assertTrue(users["tpad"][6].strip().endswith("nologin"), users["tpad"])
            self.assertTrue({"tpad", "tpad-station", "tpad-admin"} <= groups, groups)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    @unittest.skipUnless(shutil.which("systemd-tmpfiles"), "systemd-tmpfiles is not installed")
    @unittest.skipUnless(os.geteuid() == 0, "systemd-tmpfiles --root needs root to chown")
    def test_tmpfiles_creates_credentials_dir(self):
        root = tempfile.mkdtemp(prefix="tpad-root-")
        try:
            p = run(["systemd-tmpfiles", "--root", root, "--create",
                     self.d(self.tmpfilesdir, "tpad.conf")])
            self.assertEqual(p.returncode, 0, p.stderr)
            creds = os.path.join(root, self.sysconfdir.lstrip("/"), "tpad", "credentials")
            st = os.stat(creds)
            self.assertTrue(stat.S_ISDIR(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
            self.assertEqual(st.st_uid, 0)
            st = os.stat(os.path.join(creds, "oauth-secret"))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
            self.assertEqual(st.st_size, 0)
            # An existing secret is kept as it is.
            with open(os.path.join(creds, "oauth-secret"), "w") as f:
                f.write("s3cret\n")
            p = run(["systemd-tmpfiles", "--root", root, "--create",
                     self.d(self.tmpfilesdir, "tpad.conf")])
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(creds, "oauth-secret")) as f:
                self.assertEqual(f.read(), "s3cret\n")
        finally:
            shutil.rmtree(root, ignore_errors=True)


class ManPages(unittest.TestCase):
    """The man pages format without warnings and name everything they must."""

    def page(self, name):
        return os.path.join(SRC, "man", name)

    @unittest.skipUnless(shutil.which("groff"), "groff is not installed (package groff-base)")
    def test_groff_no_warnings(self):
        for page in MAN_PAGES:
            p = run(["groff", "-man", "-ww", "-z", self.page(page)])
            self.assertEqual(p.returncode, 0, page)
            self.assertEqual(p.stderr, "", page)

    @unittest.skipUnless(shutil.which("man"), "man is not installed (package man-db)")
    def test_man_no_warnings(self):
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="0")
        for page in MAN_PAGES:
            p = run(["man", "--warnings", "-E", "UTF-8", "-l", self.page(page)], env=env)
            self.assertEqual(p.returncode, 0, page + p.stderr)
            self.assertEqual(p.stderr, "", page)
            self.assertIn("NAME", re.sub(".\x08", "", p.stdout)[:400], page)

    def test_every_directive_in_tpad_conf_5(self):
        text = roff_text(self.page("tpad.conf.5"))
        names = conf_directives()
        self.assertGreater(len(names), 40)
        self.assertEqual(missing_names(names, text), [])
        self.assertGreater(len(table_directives()), 80)
        self.assertEqual(missing_names(table_directives(), text), [])
        # The check is not vacuous.
        self.assertEqual(missing_names(["upstream.no-such-thing"], text),
                         ["upstream.no-such-thing"])

    def test_tpad_conf_5_defaults_and_ranges(self):
        text = roff_text(self.page("tpad.conf.5"))
        docs = {n: (t, d) for n, t, d in re.findall(
            r'(?m)^\.BR ([a-z0-9]+\.[a-z0-9-]+) " = (.*?) \((default.*)\)"$', text)}
        self.assertGreater(len(docs), 100)
        self.assertEqual(missing_names(conf_directives(), " ".join(docs)), [])
        base = ("[upstream]\npsk-identity = line-1\n"
                "[printer.p]\nurl = socket://127.0.0.1:9100\n")

        def conf_for(name, value):
            section, key = name.split(".", 1)
            head = "[printer.p]" if section == "printer" else f"[{section}]"
            return f"{base}{head}\n{key} = {value}\n"

        check_documented_directives(self, tpadtest.TPAD, base, {"upstream.psk-identity"},
                                    conf_for, docs, shipped_values("tpad.conf"))

    def test_every_section_in_tpad_conf_5(self):
        text = roff_text(self.page("tpad.conf.5"))
        for section in sorted({n.split(".")[0] for n in conf_directives()}):
            self.assertRegex(text, rf"(?m)^\.SH \[{section}\]$", section)

    def test_every_tpactl_command_and_option_in_tpactl_1(self):
        text = roff_text(self.page("tpactl.1"))
        usage = help_text(tpadtest.TPACTL)
        commands = re.findall(r"(?m)^  ([a-z]+)\b", usage)
        self.assertGreaterEqual(len(commands), 3, usage)
        for cmd in commands:
            self.assertRegex(text, rf"(?m)^\.B {cmd}\b", f"command {cmd} has no entry")
        options = set(re.findall(r"--[a-z][a-z-]*", usage))
        self.assertEqual(missing_names(options, text), [])
        for code in re.findall(r"(\d) [a-z]", usage.split("Exit status:")[1]):
            self.assertRegex(text, rf"(?m)^\.B {code}$", f"exit status {code}")

    def test_every_tpad_option_in_tpad_8(self):
        text = roff_text(self.page("tpad.8"))
        usage = help_text(tpadtest.TPAD)
        options = set(re.findall(r"--[a-z][a-z-]*", usage))
        short = set(re.findall(r"(?<![\w-])-[a-zA-Z]\b", usage))
        self.assertGreaterEqual(len(options), 5, usage)
        self.assertEqual(missing_names(options | short, text), [])
        for code in ("0", "1", "2"):
            self.assertRegex(text, rf"(?m)^\.B {code}$", f"exit status {code}")

    def test_each_tpactl_command_takes_what_its_help_lists(self):
        usage = help_text(tpadtest.TPACTL)
        commands = [c for c in re.findall(r"(?m)^  ([a-z][a-z-]*)\b", usage) if c != "as"]
        helps = {c: help_text([tpadtest.TPACTL, c]) for c in commands}
        listed = {c: help_options(h.split("Common options")[0]) for c, h in helps.items()}
        everything = set().union(*listed.values())
        self.assertGreater(len(everything), 25)
        text = roff_text(self.page("tpactl.1"))
        self.assertEqual(missing_names(everything, text), [])
        for c in commands:
            took = set()
            for opt in sorted(everything):
                p = run([tpadtest.TPACTL, "--socket", "/nonexistent/tpad.sock", c, opt, "1"],
                        timeout=20)
                said = "-o" if opt == "--output" else opt
                if not re.search(rf"does not take {said}\b", p.stderr):
                    took.add(opt)
            self.assertEqual(sorted(took), sorted(listed[c]), f"tpactl {c} --help")

    def test_every_method_and_error_in_tpad_8(self):
        text = roff_text(self.page("tpad.8"))
        for iface in ("io.tpad.Station", "io.tpad.Admin"):
            with open(os.path.join(SRC, "proto", iface + ".varlink")) as f:
                idl = f.read()
            methods = re.findall(r"(?m)^method (\w+)\(", idl)
            errors = re.findall(r"(?m)^error (\w+)", idl)
            self.assertTrue(methods and errors, iface)
            self.assertIn("interface " + iface, text)
            for m in methods:
                self.assertIn(f"{m}(", text, f"{iface}.{m}")
            self.assertEqual(missing_names(errors, re.sub(r"[{}]", " ", text)), [], iface)

    def test_files_and_units_named(self):
        text = roff_text(self.page("tpad.8"))
        for name in ("/etc/tpad/tpad.conf", "/var/lib/tpad/tpad.db", "/run/tpad/station.sock",
                     "/run/tpad/admin.sock", "tpad.service", "tpad-station.socket",
                     "tpad-admin.socket", "tpa-psk", "store-key", "oauth-secret",
                     "/etc/tpad/credentials/"):
            self.assertIn(name, text)


TPAS = os.environ.get("TPAS", os.path.join(BUILD, "tpas", "tpas"))
TPAS_UNITS = ("tpas.service", "tpas-apps.socket", "tpas-admin.socket")


def tpas_conf_directives():
    """Every directive of conf/tpas.conf as section.key (commented-out lines included)."""
    names, section = [], None
    with open(os.path.join(SRC, "conf", "tpas.conf")) as f:
        for line in f:
            m = re.match(r"\[([a-z0-9-]+)\]\s*$", line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r"[#;]?([a-z][a-z0-9-]*)\s*=", line)
            if m and section:
                names.append(f"{section}.{m.group(1)}")
    return names


def tpas_table_directives():
    """Every directive name in tpas/asconf.c's table."""
    return directives_of("tpas", "asconf.c")


class TpasInstallTree(unittest.TestCase):
    """tpas as installed: program, config, units (verify, security score), users, man page."""

    setUpClass = classmethod(InstallTree.setUpClass.__func__)
    tearDownClass = classmethod(InstallTree.tearDownClass.__func__)
    d = InstallTree.d
    unit = InstallTree.unit

    def test_expected_files(self):
        for path in [self.d(self.sbindir, "tpas"), self.d(self.sysconfdir, "tpas", "tpas.conf"),
                     self.d(self.sysusersdir, "tpas.conf"), self.d(self.tmpfilesdir, "tpas.conf"),
                     self.d(self.mandir, "man8", "tpas.8")] + [self.unit(u) for u in TPAS_UNITS]:
            self.assertTrue(os.path.isfile(path), f"{path} not installed")
        self.assertFalse(os.path.exists(self.unit("tpas.service.in")))
        with open(self.d(self.sysconfdir, "tpas", "tpas.conf")) as a, \
                open(os.path.join(SRC, "conf", "tpas.conf")) as b:
            self.assertEqual(a.read(), b.read())
        # The example alerting rules, next to tpad's, as written and valid.
        rules = self.d(self.datadir, "doc", "tpad", "examples", "tpas-alerts.yml")
        self.assertTrue(os.path.isfile(rules), f"{rules} not installed")
        with open(rules) as a, open(os.path.join(SRC, "conf", "prometheus",
                                                  "tpas-alerts.yml")) as b:
            self.assertEqual(a.read(), b.read())
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool is missing: scripts/deps.sh installs prometheus")
        p = run([promtool, "check", "rules", rules])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_shipped_config_is_valid_and_complete(self):
        tpas = self.d(self.sbindir, "tpas")
        p = run([tpas, "--version"])
        self.assertRegex(p.stdout, r"^tpas \d+\.\d+")
        p = run([tpas, "--config", self.d(self.sysconfdir, "tpas", "tpas.conf"),
                 "--print-config"])
        self.assertEqual(p.returncode, 0, p.stderr)
        # Every directive of the table is in the shipped file, and nothing else.
        self.assertEqual(sorted(tpas_conf_directives()), sorted(tpas_table_directives()))
        self.assertGreater(len(tpas_table_directives()), 25)

    def test_service_unit_contents(self):
        u = read_unit(self.unit("tpas.service"))
        svc, unit = u["Service"], u["Unit"]
        self.assertEqual(svc["Type"], ["notify"])
        self.assertEqual(svc["ExecStart"], [
            f"{self.sbindir}/tpas --config {self.sysconfdir}/tpas/tpas.conf"])
        # systemctl reload: a file that would not start fails the reload, then SIGHUP.
        self.assertEqual(svc["ExecReload"], [svc["ExecStart"][0] + " --check-config",
                                             "/bin/kill -HUP $MAINPID"])
        with open(self.unit("tpas.service")) as f:
            self.assertNotRegex(f.read(), r"@[a-z_]+@", "unconfigured @var@ left")
        self.assertEqual((svc["User"], svc["Group"]), (["tpas"], ["tpas"]))
        self.assertEqual(svc["StateDirectory"], ["tpas"])
        creds = {c.split(":", 1)[0]: c.split(":", 1)[1] for c in svc["LoadCredential"]}
        self.assertEqual(set(creds), {"tunnel-key", "store-key", "as-rsa-key"})
        for name, path in creds.items():
            self.assertEqual(path, f"{self.sysconfdir}/tpas/credentials/{name}")
        for sock in ("tpas-apps.socket", "tpas-admin.socket"):
            self.assertIn(sock, " ".join(unit["Requires"]).split())
        interval = seconds(unit["StartLimitIntervalSec"][0])
        burst = int(unit["StartLimitBurst"][0])
        self.assertGreater(burst, interval / seconds(svc["RestartSec"][0]) + 1)

    def test_socket_units(self):
        groups = set()
        with open(self.d(self.sysusersdir, "tpas.conf")) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in ("g", "u"):
                    groups.add(fields[1])
        self.assertTrue({"tpas", "tpas-apps", "tpas-admin"} <= groups, groups)
        for name, group in (("apps", "tpas-apps"), ("admin", "tpas-admin")):
            s = read_unit(self.unit(f"tpas-{name}.socket"))["Socket"]
            self.assertEqual(s["ListenStream"], [f"/run/tpas/{name}.sock"])
            self.assertEqual(s["FileDescriptorName"], [name])
            self.assertEqual(s["SocketGroup"], [group])
            self.assertEqual(s["Service"], ["tpas.service"])

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_systemd_analyze_verify(self):
        vdir = tempfile.mkdtemp(prefix="tpas-verify-")
        try:
            for u in TPAS_UNITS:
                shutil.copy(self.unit(u), vdir)
            svc = os.path.join(vdir, "tpas.service")
            with open(svc) as f:
                text = f.read()
            exe = f"ExecStart={self.sbindir}/tpas "
            self.assertIn(exe, text)
            with open(svc, "w") as f:
                # Every command line naming the program (ExecStart=, ExecReload=).
                f.write(text.replace(f"={self.sbindir}/tpas ",
                                     f"={self.d(self.sbindir, 'tpas')} "))
            env = dict(os.environ, MANPATH=self.d(self.mandir), SYSTEMD_LOG_COLOR="0")
            args = ["systemd-analyze", "verify", "--man=yes"] + [
                os.path.join(vdir, u) for u in TPAS_UNITS]
            p = run(args, env=env)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual((p.stdout + p.stderr).strip(), "")
        finally:
            shutil.rmtree(vdir, ignore_errors=True)

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_security_exposure(self):
        p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                 self.unit("tpas.service")], env=dict(os.environ, SYSTEMD_COLORS="0"))
        out = p.stdout + p.stderr
        m = re.search(r"Overall exposure level for tpas\.service:\s*([0-9.]+)", out)
        self.assertIsNotNone(m, out)
        score = float(m.group(1))
        print(f"systemd-analyze security: tpas.service exposure {score}")
        self.assertLessEqual(score, MAX_EXPOSURE, out)

    @unittest.skipUnless(shutil.which("systemd-sysusers"), "systemd-sysusers is not installed")
    def test_sysusers_creates_user_and_groups(self):
        root = tempfile.mkdtemp(prefix="tpas-root-")
        try:
            os.makedirs(os.path.join(root, "etc"))
            for f in ("passwd", "group"):
                open(os.path.join(root, "etc", f), "w").close()
            p = run(["systemd-sysusers", "--root", root, self.d(self.sysusersdir, "tpas.conf")])
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(root, "etc", "group")) as f:
                groups = {line.split(":")[0] for line in f if line.strip()}
            self.assertTrue({"tpas", "tpas-apps", "tpas-admin"} <= groups, groups)
        finally:
            shutil.rmtree(root, ignore_errors=True)


class TpasManPage(unittest.TestCase):
    """tpas(8) names every directive, option, method, error, file and unit."""

    def text(self):
        return roff_text(os.path.join(SRC, "man", "tpas.8"))

    def test_every_directive(self):
        text = self.text()
        self.assertEqual(missing_names(tpas_table_directives(), text), [])
        self.assertEqual(missing_names(["tunnel.no-such-thing"], text), ["tunnel.no-such-thing"])

    def test_every_option(self):
        usage = help_text(TPAS)
        options = set(re.findall(r"--[a-z][a-z-]*", usage))
        short = set(re.findall(r"(?<![\w-])-[a-zA-Z]\b", usage))
        self.assertGreaterEqual(len(options), 5, usage)
        self.assertEqual(missing_names(options | short, self.text()), [])

    def test_defaults_and_ranges(self):
        section = self.text().split(".SH CONFIGURATION")[1].split("\n.SH ")[0]
        docs = {}
        for entry in re.split(r"(?m)^\.TP\n", section):
            m = re.match(r"\.B ([a-z0-9]+\.[a-z0-9-]+)\n(.*)", entry, re.S)
            # ".IR /var/lib/tpas/tpas.db ;" reads "/var/lib/tpas/tpas.db;".
            body = m and re.sub(r"(?m)^\.[A-Z]+ (\S+)(?: (\S+))?$", r"\1\2", m.group(2))
            d = m and re.search(r"\((default [^)]*)\)", " ".join(body.split()))
            if d:
                docs[m.group(1)] = (None, d.group(1))
        self.assertGreater(len(docs), 12)

        def conf_for(name, value):
            section, key = name.split(".", 1)
            return f"[{section}]\n{key} = {value}\n"

        check_documented_directives(self, TPAS, "", set(), conf_for, docs,
                                    shipped_values("tpas.conf"))
        # The limits tpas does not share with tpad are stated as its own.
        limits = print_config(TPAS, "")
        for key in ("max-clients", "max-clients-per-uid", "max-clients-per-process"):
            self.assertEqual(shipped_values("tpas.conf")[f"limits.{key}"],
                             limits[f"limits.{key}"])
            self.assertRegex(" ".join(section.split()),
                             rf"\b{limits[f'limits.{key}']} (in all|per)\b", key)

    def test_every_method_and_error(self):
        text = self.text()
        for iface in ("io.tpad.AS", "io.tpad.ASAdmin"):
            with open(os.path.join(SRC, "proto", iface + ".varlink")) as f:
                idl = f.read()
            methods = re.findall(r"(?m)^method (\w+)\(", idl)
            errors = re.findall(r"(?m)^error (\w+)", idl)
            self.assertTrue(methods and errors, iface)
            self.assertIn("interface " + iface, text)
            for m in methods:
                self.assertIn(f"{m}(", text, f"{iface}.{m}")
            self.assertEqual(missing_names(errors, text), [], iface)

    def test_files_and_units_named(self):
        text = self.text()
        for name in ("/etc/tpas/tpas.conf", "/var/lib/tpas/tpas.db", "/run/tpas/apps.sock",
                     "/run/tpas/admin.sock", "tpas.service", "tpas-apps.socket",
                     "tpas-admin.socket", "tunnel-key", "store-key", "as-rsa-key",
                     "/etc/tpas/credentials/"):
            self.assertIn(name, text)


if __name__ == "__main__":
    tpadtest.main()
