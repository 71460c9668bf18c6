"""Metrics: Admin.Metrics, tpactl metrics and the HTTP /metrics endpoint, checked with the
reference parsers (promtool, prometheus_client's strict OpenMetrics parser) and scraped by a
real Prometheus server."""

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import tpadtest
from tpadtest import TpadTestCase, free_port, wait_for

TKM = "31110123D345666E2DBD"
SAMPLE = re.compile(r'^([a-z_][a-z0-9_]*)(\{([a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\})? '
                    r'(-?[0-9.e+]+|\+Inf|NaN)$')
SYSTEM_PYTHON = "/usr/bin/python3"
SRC_ROOT = os.environ.get("SRC_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(SRC_ROOT, "conf", "prometheus", "tpad-alerts.yml")
PROM_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
               "application/openmetrics-text;version=0.0.1;q=0.75,"
               "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def parse(text, openmetrics=True):
    """Strict reading: HELP+TYPE before samples, known types, samples of typed families.
    OpenMetrics: counter families named without _total, samples with it, ends with # EOF.
    Prometheus text: counter families named with _total, no # EOF."""
    lines = text.split("\n")
    assert lines[-1] == "", "must end with a newline"
    if openmetrics:
        assert lines[-2] == "# EOF", "must end with '# EOF'"
        lines = lines[:-2]
    else:
        assert "# EOF" not in lines, "no '# EOF' in the Prometheus text format"
        lines = lines[:-1]
    types, values = {}, {}
    for line in lines:
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram", "info"), line
            assert name not in types, f"second TYPE for {name}"
            if typ == "counter":
                assert name.endswith("_total") != openmetrics, line
            assert typ != "info" or openmetrics, line
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name = m.group(1)
        fam = name
        suffixes = ("_bucket", "_sum", "_count", "_total", "_info") if openmetrics else \
            ("_bucket", "_sum", "_count")
        for suffix in suffixes:
            if name.endswith(suffix) and name[: -len(suffix)] in types:
                fam = name[: -len(suffix)]
        assert fam in types, f"sample without TYPE: {line}"
        values[name + (m.group(2) or "")] = float(m.group(5).replace("+Inf", "inf"))
    return types, values


def run_python(code, text):
    r = subprocess.run([SYSTEM_PYTHON, "-c", code], input=text, text=True, capture_output=True)
    return r


def http_get(url, accept=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


OM_CHECK = ("import sys\nfrom prometheus_client.openmetrics.parser import "
            "text_string_to_metric_families as p\n"
            "fams = list(p(sys.stdin.read()))\nprint(len(fams))")
TEXT_CHECK = ("import sys\nfrom prometheus_client.parser import "
              "text_string_to_metric_families as p\n"
              "fams = list(p(sys.stdin.read()))\nprint(len(fams))")


def rss_kib(pid):
    """A process's resident set in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Metrics(TpadTestCase):
    def start(self, sessions=3):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        self.port = free_port()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra=f"upstream.sessions = {sessions}\n"
                                   f"metrics.listen = 127.0.0.1:{self.port}")
        # A label printer, so that the print module's families are in the text too.
        with open(d.conf, "a") as f:
            f.write(f"[printer.line1]\nurl = socket://127.0.0.1:{free_port()}\ntimeout = 2s\n")
        d.start()

        def ready():
            with d.admin_client() as a:
                up = a.call("io.tpad.Admin.Status")["upstream"]
            return all(x["state"] == "ready" for x in up["sessions"])
        wait_for(ready, 15, "sessions")
        with d.station_client() as c:
            for i in range(5):
                c.call("io.tpad.Station.Activate", {"devEUI": f"{i:016X}", "tkmInfo": TKM})
            c.call("io.tpad.Station.Activate", {"devEUI": f"{0:016X}", "tkmInfo": TKM})
            try:
                c.call("io.tpad.Station.Activate",
                       {"devEUI": f"{0:016X}", "tkmInfo": "31110123D345666E0000"})
            except tpadtest.VarlinkError:
                pass
            # Lookups hand tokens out too (an offline line's stations use nothing else);
            # a oneway one hands out nothing.
            for i in range(3):
                c.call("io.tpad.Station.Lookup", {"devEUI": f"{i:016X}"})
            c.send("io.tpad.Station.Lookup", {"devEUI": f"{3:016X}"}, oneway=True)
        with d.admin_client() as a:
            self.assertEqual(a.call("io.tpad.Admin.Status")["activations"]["lookedUp"], 3)
        # Metrics show the rows as counted in the background every second (a scrape never
        # waits for the store); a Status call counts them afresh.
        with d.admin_client() as a:
            self.assertEqual(a.call("io.tpad.Admin.Status")["store"]["rows"]["ISSUED"], 5)
        return d

    def check_values(self, types, v):
        self.assertEqual(v['tpad_activations_total{outcome="ok"}'], 6)
        self.assertEqual(v['tpad_activations_total{outcome="conflict"}'], 1)
        self.assertEqual(v['tpad_tokens_handed_out_total{source="live"}'], 5)
        self.assertEqual(v['tpad_tokens_handed_out_total{source="stored"}'], 1)
        self.assertEqual(v['tpad_tokens_handed_out_total{source="lookup"}'], 3)
        self.assertEqual(v['tpad_store_devices{state="ISSUED"}'], 5)
        self.assertEqual(v['tpad_upstream_requests_total{kind="import"}'], 5)
        self.assertEqual(v['tpad_upstream_sessions{state="ready"}'], 3)
        self.assertEqual(v["tpad_upstream_breaker_open"], 0)
        self.assertEqual(v["tpad_upstream_up"], 1)
        self.assertEqual(v["tpad_store_failing"], 0)
        self.assertEqual(v['tpad_print_jobs_total{printer="line1",outcome="printed"}'], 0)
        self.assertEqual(v["tpad_upstream_queue_depth"], 0)
        self.assertEqual(types["tpad_upstream_request_duration_seconds"], "histogram")
        buckets = [(k, x) for k, x in v.items()
                   if k.startswith("tpad_upstream_request_duration_seconds_bucket")]
        counts = [x for _, x in buckets]
        self.assertEqual(counts, sorted(counts), "buckets must be cumulative")
        self.assertTrue(buckets[-1][0].endswith('le="+Inf"}'))
        self.assertEqual(buckets[-1][1], v["tpad_upstream_request_duration_seconds_count"])
        self.assertGreaterEqual(v["tpad_upstream_request_duration_seconds_count"], 5)
        # process_* in place of an uptime gauge, with values that make sense.
        self.assertNotIn("tpad_uptime_seconds", v)
        self.assertGreater(v["process_open_fds"], 5)
        self.assertGreaterEqual(v["process_max_fds"], v["process_open_fds"])
        self.assertGreater(v["process_resident_memory_bytes"], 1 << 20)
        self.assertGreaterEqual(v["process_virtual_memory_bytes"],
                                v["process_resident_memory_bytes"])
        self.assertGreaterEqual(v["process_cpu_seconds_total"], 0)
        started = v["process_start_time_seconds"]
        self.assertLess(abs(time.time() - started), 120, "start time is not a recent epoch")
        info = [k for k in v if k.startswith("tpad_build_info{")]
        self.assertEqual(len(info), 1)
        self.assertRegex(info[0], r'version="[0-9]+\.[0-9]+\.[0-9]+"')
        self.assertIn('sqlite="3.', info[0])

    def test_metrics(self):
        d = self.start()
        # Admin.Metrics and tpactl metrics: OpenMetrics by default.
        p = d.tpactl("--socket", d.admin, "metrics", check=0)
        types, v = parse(p.stdout)
        self.check_values(types, v)
        self.assertEqual(v['tpad_connections{socket="admin"}'], 1)
        self.assertEqual(types["tpad_activations"], "counter")
        self.assertEqual(types["tpad_build"], "info")
        # The strict OpenMetrics reference parser accepts it (it refused the old text with
        # "Clashing name" when counter families were declared with _total).
        r = run_python(OM_CHECK, p.stdout)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout), len(types))
        # The raw reply carries the same text.
        p = d.tpactl("--socket", d.admin, "--json", "metrics", check=0)
        self.assertIn("# EOF", json.loads(p.stdout)["text"])
        # The Prometheus text format on request, for node_exporter's textfile collector.
        p = d.tpactl("--socket", d.admin, "metrics", "--format", "prometheus", check=0)
        types, v = parse(p.stdout, openmetrics=False)
        self.check_values(types, v)
        r = run_python(TEXT_CHECK, p.stdout)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout), len(types))
        p = d.tpactl("--socket", d.admin, "metrics", "--format", "json", check=2)
        self.assertIn("--format must be openmetrics or prometheus", p.stderr)
        with d.admin_client() as a:
            with self.assertRaises(tpadtest.VarlinkError) as e:
                a.call("io.tpad.Admin.Metrics", {"format": "json"})
        self.assertEqual(e.exception.error, "io.tpad.Admin.InvalidParameter")
        self.assertEqual(e.exception.params["parameter"], "format")

    def test_http(self):
        d = self.start()
        url = f"http://127.0.0.1:{self.port}/metrics"
        # No Accept (curl, a browser): the Prometheus text format, clean for promtool.
        st, h, text = http_get(url)
        self.assertEqual(st, 200)
        self.assertEqual(h["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        types, v = parse(text, openmetrics=False)
        self.check_values(types, v)
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool is missing: scripts/deps.sh installs prometheus")
        r = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        # What Prometheus asks for: OpenMetrics, accepted by the strict parser.
        st, h, text = http_get(url, PROM_ACCEPT)
        self.assertEqual(st, 200)
        self.assertTrue(h["Content-Type"].startswith("application/openmetrics-text; "
                                                     "version=1.0.0"), h["Content-Type"])
        types, v = parse(text)
        self.check_values(types, v)
        r = run_python(OM_CHECK, text)
        self.assertEqual(r.returncode, 0, r.stderr)
        # HEAD, other paths and methods.
        st, h, body = http_get(url, method="HEAD")
        self.assertEqual((st, body), (200, ""))
        self.assertEqual(http_get(f"http://127.0.0.1:{self.port}/")[0], 404)
        self.assertEqual(http_get(f"http://127.0.0.1:{self.port}/metricsx")[0], 404)
        self.assertEqual(http_get(url, method="POST")[0], 405)
        # On one kept-alive connection: a HEAD's headers only (with the GET's length), so the
        # next answer starts right after them; a POST with a small body gets its 405.
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("HEAD", "/metrics")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.assertGreater(int(r.headers["Content-Length"]), 1000)
        c.request("POST", "/metrics", body=b"hello")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 405)
        c.request("GET", "/metrics")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertIn("# TYPE tpad_", r.read().decode())
        c.close()
        # The alerting rules shipped in conf/ are valid.
        r = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("7 rules found", r.stdout)

    def test_a_client_that_never_reads_holds_no_memory_and_few_descriptors(self):
        """One connection pipelining GET /metrics without reading grew tpad by 800 MB in
        2 s (evhttp read on); 100 connections trickling a request took every descriptor,
        station and admin calls with them. The endpoint reads a connection's next request
        once the last answer is written, and keeps 16 open at most."""
        d = self.start()
        rss0 = rss_kib(d.proc.pid)
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 256
        sent, stalled_at, t_end = 0, None, time.monotonic() + 3
        while time.monotonic() < t_end:
            try:
                sent += s.send(req)
                stalled_at = None
            except BlockingIOError:
                stalled_at = stalled_at or time.monotonic()
                if time.monotonic() - stalled_at > 0.5:
                    break  # tpad stopped reading: the socket buffers are full
                time.sleep(0.01)
        self.assertLess(sent, 16 << 20, "tpad kept reading requests it could not answer")
        # (ASan keeps freed memory in quarantine: a bound with room for it there.)
        sanitized = os.environ.get("TPAD_SANITIZE", "none") not in ("", "none")
        self.assertLess(rss_kib(d.proc.pid) - rss0, (160 if sanitized else 32) << 10)
        fds0 = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        slow = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(100)]
        for c in slow:
            c.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.5)
        self.assertLessEqual(len(os.listdir(f"/proc/{d.proc.pid}/fd")) - fds0, 16)
        with d.admin_client() as c:
            c.call("io.tpad.Admin.Status")
        with d.station_client() as c:
            c.call("org.varlink.service.GetInfo")
        for c in slow + [s]:
            c.close()
        wait_for(lambda: http_get(f"http://127.0.0.1:{self.port}/metrics")[0] == 200, 15,
                 "a scrape once the slow clients are gone")

    def test_an_unreachable_store_alerts(self):
        """The shipped rules, run by promtool on series: a store down for two minutes fires
        TpadStoreDown (tpad_store_failing stays 0 when no transaction was tried), a
        short blip does not, a store that is up never does."""
        self.promtool_test("store-down", """
      - series: 'tpad_store_up{backend="postgresql",instance="line1",job="tpad"}'
        values: '1 0x12'
      - series: 'tpad_store_up{backend="postgresql",instance="line2",job="tpad"}'
        values: '1 0x4 1x8'
      - series: 'tpad_store_failing{instance="line1",job="tpad"}'
        values: '0x13'
    alert_rule_test:
      - eval_time: 1m
        alertname: TpadStoreDown
        exp_alerts: []
      - eval_time: 3m
        alertname: TpadStoreDown
        exp_alerts:
          - exp_labels:
              severity: critical
              backend: postgresql
              instance: line1
              job: tpad
            exp_annotations:
              summary: "tpad on line1 cannot reach its store's database"
              description: "The PostgreSQL store has been unreachable for 2 minutes: every activation and lookup answers StoreFailed and no import is sent. tpactl status shows the reason (store DOWN)."
      - eval_time: 3m
        alertname: TpadStoreFailing
        exp_alerts: []
""")

    def test_a_cloud_that_keeps_failing_opens_the_breaker_alert(self):
        """A cloud that keeps failing opens the breaker, which half-opens after each
        cool-down (5 s) and opens again: scrapes read 1 and 0.5 by turns. TpadBreakerOpen
        fires after a minute of that (with "== 1" it never did); a breaker that closed
        again does not. TpadStoreFailing says that the store fails, not a count it does
        not have."""
        self.promtool_test("breaker", """
      - series: 'tpad_upstream_breaker_open{instance="line1",job="tpad"}'
        values: '0 1 0.5 1 0.5 1 0.5 1 0.5 1 0.5 1'
      - series: 'tpad_upstream_breaker_open{instance="line2",job="tpad"}'
        values: '0 1 0.5 0x9'
      - series: 'tpad_store_failing{instance="line1",job="tpad"}'
        values: '0 1x11'
      - series: 'tpad_store_failed_commits_total{instance="line1",job="tpad"}'
        values: '0 3x11'
    alert_rule_test:
      - eval_time: 30s
        alertname: TpadBreakerOpen
        exp_alerts: []
      - eval_time: 2m
        alertname: TpadBreakerOpen
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: line1
              job: tpad
            exp_annotations:
              summary: "tpad's circuit breaker to the cloud is open on line1"
              description: "Repeated upstream failures: requests fail fast. tpactl status shows the last error."
      - eval_time: 2m
        alertname: TpadStoreFailing
        exp_alerts:
          - exp_labels:
              severity: critical
              instance: line1
              job: tpad
            exp_annotations:
              summary: "tpad's store rolled back transactions on line1"
              description: "Store transactions fail, or failed in the last 5 minutes (disk full, I/O error): activations answer StoreFailed meanwhile. tpactl status shows the reason (exit 6 while failing)."
""")

    def test_a_printer_gone_for_five_minutes_alerts(self):
        """tpad_printer_ready 0 for 5 minutes fires TpadPrinterNotReady for that printer; a
        printer out of paper for a minute, and one that is ready, do not."""
        self.promtool_test("printer", """
      - series: 'tpad_printer_ready{instance="line1",job="tpad",printer="zebra"}'
        values: '1 0x30'
      - series: 'tpad_printer_ready{instance="line1",job="tpad",printer="office"}'
        values: '1 0x4 1x26'
    alert_rule_test:
      - eval_time: 4m
        alertname: TpadPrinterNotReady
        exp_alerts: []
      - eval_time: 7m
        alertname: TpadPrinterNotReady
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: line1
              job: tpad
              printer: zebra
            exp_annotations:
              summary: "printer zebra of tpad on line1 cannot print"
              description: "The printer has not been ready for 5 minutes (unreachable, paper out, head open, paused): its labels fail with PrintFailed and are reprinted with tpactl print once it is back. tpactl status shows why (printer: ...)."
""")

    def promtool_test(self, name, body):
        """promtool test rules on the shipped rules, every 15 s: body is the test's
        input_series and alert_rule_test."""
        promtool = shutil.which("promtool")
        self.assertTrue(promtool, "promtool is missing: scripts/deps.sh installs prometheus")
        test = os.path.join(self.tmp, f"{name}.test.yml")
        with open(test, "w") as f:
            f.write(f"rule_files: [{RULES}]\nevaluation_interval: 15s\ntests:\n"
                    f"  - interval: 15s\n    input_series:{body}")
        r = subprocess.run([promtool, "test", "rules", test], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout + r.stderr)

    def test_bad_listen(self):
        d = self.daemon(conf_extra="metrics.listen = 127.0.0.1")
        p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("metrics.listen", p.stderr)
        # A host that does not resolve (where the resolver answers): said at the check.
        t0 = time.monotonic()
        try:
            socket.getaddrinfo("no-such-host.invalid", 9100)
        except socket.gaierror:
            if time.monotonic() - t0 < 1.5:
                d = self.daemon(conf_extra="metrics.listen = no-such-host.invalid:9100")
                p = subprocess.run([tpadtest.TPAD, "--config", d.conf, "--check-config"],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertRegex(p.stderr, r"tpad\.conf:\d+: metrics\.listen: cannot resolve "
                                           r"'no-such-host\.invalid'")
        # A port already taken: tpad says so and exits instead of running without metrics.
        with socket_bound() as port:
            d = self.daemon(conf_extra=f"metrics.listen = 127.0.0.1:{port}")
            d.start(wait=False)
            self.assertEqual(d.proc.wait(15), 1)
            self.assertIn("cannot listen on", d.log_text())

    def test_port_0_logs_the_port_bound(self):
        """metrics.listen with port 0 (the system picks one): the log names the port
        bound, which serves, not ":0"."""
        d = self.daemon(conf_extra="metrics.listen = 127.0.0.1:0").start()
        m = re.search(r"metrics served on http://127\.0\.0\.1:(\d+)/metrics", d.log_text())
        self.assertIsNotNone(m, d.log_text())
        self.assertNotEqual(m.group(1), "0")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=10) as r:
            self.assertIn(b"tpad_build_info", r.read())

    def test_prometheus_scrapes(self):
        """A real Prometheus server scrapes tpad and answers a query for a counter."""
        self.start()
        with Prometheus(self.tmp, self.port, "tpad", rules=RULES) as prom:
            res = wait_for(lambda: prom.query('tpad_activations_total{outcome="ok"}'), 60,
                           "Prometheus to scrape tpad")
            self.assertEqual(res[0]["metric"]["job"], "tpad")
            self.assertEqual(float(res[0]["value"][1]), 6)
            up = prom.query('up{job="tpad"}')
            self.assertEqual(float(up[0]["value"][1]), 1)
            self.assertTrue(prom.query("process_resident_memory_bytes"))
            self.assertTrue(prom.query('tpad_build_info{job="tpad"}'))
            # The scrape used OpenMetrics and reported no sample errors.
            target = prom.get("targets")["activeTargets"][0]
            self.assertEqual(target["health"], "up", target.get("lastError"))
            # The example rules loaded and none fires on a healthy tpad.
            rules = [r for g in prom.get("rules")["groups"] for r in g["rules"]]
            self.assertEqual(len(rules), 7)
            self.assertTrue(all(r["health"] in ("ok", "unknown") for r in rules), rules)
            firing = [r["name"] for r in rules if r.get("state") == "firing"]
            self.assertEqual(firing, [])


class Prometheus:
    """A real Prometheus server (from scripts/deps.sh) scraping one target every second,
    with its data under a fresh directory in tmp; stopped on leaving the with block."""

    def __init__(self, tmp, port, job, rules=None):
        self.prom = shutil.which("prometheus")
        assert self.prom, "prometheus is missing: scripts/deps.sh installs it"
        self.work = tempfile.mkdtemp(prefix=f"{job}-prom-", dir=tmp)
        self.port = free_port()
        self.cfg = os.path.join(self.work, "prometheus.yml")
        with open(self.cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n")
            if rules:
                f.write(f"rule_files:\n  - {rules}\n")
            f.write(f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{port}']\n")
        self.api = f"http://127.0.0.1:{self.port}/api/v1"

    def __enter__(self):
        self.log = open(os.path.join(self.work, "prometheus.log"), "wb")
        self.proc = subprocess.Popen([self.prom, f"--config.file={self.cfg}",
                                      f"--storage.tsdb.path={os.path.join(self.work, 'data')}",
                                      f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--log.level=warn"], stdout=self.log, stderr=self.log)
        return self

    def get(self, what):
        """The data of an API answer (targets, rules, ...)."""
        st, _, body = http_get(f"{self.api}/{what}")
        assert st == 200, body
        return json.loads(body)["data"]

    def query(self, q):
        """An instant query's result, or None while there is none (or no server yet)."""
        try:
            st, _, body = http_get(f"{self.api}/query?" + urllib.parse.urlencode({"query": q}))
        except OSError:
            return None
        res = json.loads(body)["data"]["result"] if st == 200 else None
        return res or None

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class socket_bound:
    """A TCP port on 127.0.0.1 held open while in use."""

    def __enter__(self):
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(1)
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


if __name__ == "__main__":
    tpadtest.main()
