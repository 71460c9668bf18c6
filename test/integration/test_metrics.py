"""Admin.Metrics and tpactl metrics: format fit for node_exporter, values that add up."""

import os
import re
import secrets
import subprocess

import tpadtest
from tpadtest import TpadTestCase, wait_for

TKM = "31110123D345666E2DBD"
SAMPLE = re.compile(r'^([a-z_][a-z0-9_]*)(\{([a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\})? '
                    r'(-?[0-9.e+]+|\+Inf|NaN)$')
SYSTEM_PYTHON = "/usr/bin/python3"


def parse(text):
    """Strict reading: HELP+TYPE before samples, known types, samples of typed families."""
    lines = text.split("\n")
    assert lines[-1] == "" and lines[-2] == "# EOF", "must end with '# EOF'"
    types, values = {}, {}
    for line in lines[:-2]:
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram"), line
            assert name not in types, f"second TYPE for {name}"
            if typ == "counter":
                assert name.endswith("_total"), line
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name = m.group(1)
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in types:
                fam = name[: -len(suffix)]
        assert fam in types, f"sample without TYPE: {line}"
        values[name + (m.group(2) or "")] = float(m.group(5).replace("+Inf", "inf"))
    return types, values


class Metrics(TpadTestCase):
    def test_metrics(self):
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                        conf_extra="upstream.sessions = 3").start()

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
        p = d.tpactl("--socket", d.admin, "metrics", check=0)
        types, v = parse(p.stdout)
        self.assertEqual(v['tpad_activations_total{outcome="ok"}'], 6)
        self.assertEqual(v['tpad_activations_total{outcome="conflict"}'], 1)
        self.assertEqual(v['tpad_tokens_handed_out_total{source="live"}'], 5)
        self.assertEqual(v['tpad_tokens_handed_out_total{source="stored"}'], 1)
        self.assertEqual(v['tpad_store_devices{state="ISSUED"}'], 5)
        self.assertEqual(v['tpad_upstream_requests_total{kind="import"}'], 5)
        self.assertEqual(v['tpad_upstream_sessions{state="ready"}'], 3)
        self.assertEqual(v["tpad_upstream_breaker_open"], 0)
        self.assertEqual(v["tpad_upstream_queue_depth"], 0)
        self.assertEqual(v['tpad_connections{socket="admin"}'], 1)
        self.assertEqual(types["tpad_upstream_request_duration_seconds"], "histogram")
        buckets = [(k, x) for k, x in v.items()
                   if k.startswith("tpad_upstream_request_duration_seconds_bucket")]
        counts = [x for _, x in buckets]
        self.assertEqual(counts, sorted(counts), "buckets must be cumulative")
        self.assertTrue(buckets[-1][0].endswith('le="+Inf"}'))
        self.assertEqual(buckets[-1][1], v["tpad_upstream_request_duration_seconds_count"])
        self.assertGreaterEqual(v["tpad_upstream_request_duration_seconds_count"], 5)
        # The raw reply carries the same text.
        p = d.tpactl("--socket", d.admin, "--json", "metrics", check=0)
        self.assertIn("# EOF", p.stdout)
        # node_exporter's textfile collector reads the Prometheus text format: cross-check
        # with the reference parser when the system Python has it.
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import prometheus_client"],
                               capture_output=True) if os.path.exists(SYSTEM_PYTHON) else None
        if probe and probe.returncode == 0:
            code = ("import sys\nfrom prometheus_client.parser import "
                    "text_string_to_metric_families as p\n"
                    "fams = list(p(sys.stdin.read()))\nprint(len(fams))")
            r = subprocess.run([SYSTEM_PYTHON, "-c", code], input=p_text(d), text=True,
                               capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertGreaterEqual(int(r.stdout), len(types) - 1)


def p_text(d):
    return d.tpactl("--socket", d.admin, "metrics", check=0).stdout


if __name__ == "__main__":
    tpadtest.main()
