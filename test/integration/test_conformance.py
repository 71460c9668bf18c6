"""Varlink conformance: every method of every socket of tpad and tpas through every call flag
(none, more, oneway, upgrade and their pairs) against the real daemons, each answer checked
against the interface files (reply and error fields, types, nothing undeclared)."""

import json
import os
import secrets
import sys
import unittest

import tpadtest
from test_tpas import DEV, TpasCase
from tpadtest import TpadTestCase, wait_for
from varlink_idl import IdlError, Interface

from lrc_sim import encrypt_astk  # noqa: E402  (test_tpas put test/lrc-sim on the path)

TKM = "31110123D345666E2DBD"
SERVICE = "org.varlink.service"
FLAGS = [(), ("more",), ("oneway",), ("upgrade",), ("more", "oneway"), ("more", "upgrade"),
         ("oneway", "upgrade")]


class Checks:
    """What both daemons' sockets must do; each daemon's case says its product, valid
    parameters for each method, its streams, the errors a valid call may still end in, and
    how to see that a oneway call ran."""

    PRODUCT = None
    EXPECTED_ERRORS = {}
    # Fields an interface may leave untyped ("object"), as Interface.uses_object() names them.
    UNTYPED = {}
    # Methods of interfaces some socket does not serve: there, MethodNotFound.
    OTHERS = []

    def params(self, method):
        raise NotImplementedError

    def streams(self, method):
        return False

    def oneway_ran(self, c, ifaces, method, params, flags):
        """Check that a valid oneway call ran (the default: nothing to see)."""

    def interfaces(self, client):
        """The interfaces a socket serves, parsed from its own descriptions."""
        client.send(f"{SERVICE}.GetInfo")
        info = client.recv()["parameters"]
        out = {}
        for name in info["interfaces"]:
            client.send(f"{SERVICE}.GetInterfaceDescription", {"interface": name})
            text = client.recv()["parameters"]["description"]
            iface = Interface(text)
            self.assertEqual(iface.name, name)
            out[name] = iface
        # The description served is the file in proto/.
        for name in out:
            if name == SERVICE:
                continue
            with open(os.path.join(tpadtest.SRC_ROOT, "proto", name + ".varlink")) as f:
                self.assertEqual(Interface(f.read()).methods.keys(), out[name].methods.keys())
        return info, out

    def send(self, c, method, params, flags):
        msg = {"method": method, "parameters": params}
        for f in flags:
            msg[f] = True
        c.send_raw(json.dumps(msg).encode() + b"\0")

    def check_error(self, ifaces, method, reply, strict=True):
        """An error reply names an error its interface (or org.varlink.service) declares,
        with exactly the declared fields."""
        name = reply["error"]
        iface_name, err = name.rsplit(".", 1)
        self.assertIn(iface_name, (method.rsplit(".", 1)[0], SERVICE), f"{method}: {name}")
        iface = ifaces[iface_name]
        self.assertIn(err, iface.errors, f"{method}: {name} is not declared")
        try:
            iface.check(reply.get("parameters", {}), iface.errors[err], name, strict)
        except IdlError as e:
            self.fail(f"{method}: {e}")

    def check_reply(self, ifaces, method, reply):
        iface_name, member = method.rsplit(".", 1)
        iface = ifaces[iface_name]
        try:
            iface.check(reply.get("parameters", {}), iface.methods[member][1], method)
        except IdlError as e:
            self.fail(f"{method}: {e}\n{json.dumps(reply)[:400]}")

    def walk(self, client_fn):
        checked = 0
        with client_fn() as c:
            info, ifaces = self.interfaces(c)
            for iname, iface in ifaces.items():
                self.assertEqual(iface.uses_object(), self.UNTYPED.get(iname, []),
                                 f"{iname}: untyped fields")
                for member in iface.methods:
                    method = f"{iname}.{member}"
                    for flags in FLAGS:
                        with self.subTest(method=method, flags=flags):
                            self.one(c, ifaces, method, flags)
                            checked += 1
            # Methods of an interface this socket does not serve do not exist here.
            for other in self.OTHERS:
                if other.rsplit(".", 1)[0] in ifaces:
                    continue
                self.send(c, other, {}, ())
                r = c.recv()
                self.assertEqual(r["error"], f"{SERVICE}.MethodNotFound", other)
                self.check_error(ifaces, other, r)
        return checked

    def one(self, c, ifaces, method, flags):
        params = self.params(method)
        self.send(c, method, params, flags)
        if "upgrade" in flags and "oneway" not in flags:
            # Refused as a call before it reaches the method: a defined error.
            r = c.recv()
            self.assertEqual(r.get("error"), f"{SERVICE}.InvalidParameter", r)
            self.assertEqual(r["parameters"]["parameter"], "upgrade")
            self.check_error(ifaces, method, r, strict=False)
            return
        if "oneway" in flags:
            # oneway wins: no reply at all (not even the error of an upgrade), and a call
            # that is valid runs.
            # No reply; the next call's answer comes first, and the call did run.
            self.send(c, f"{SERVICE}.GetInfo", {}, ())
            r = c.recv()
            self.assertEqual(r["parameters"].get("product"), self.PRODUCT,
                             f"{method} oneway sent a reply: {r}")
            if "upgrade" not in flags:
                self.oneway_ran(c, ifaces, method, params, flags)
            return
        if self.streams(method) and "more" not in flags:
            r = c.recv()
            # org.varlink.service's, or the method's interface's own.
            self.assertIn(r.get("error"), (f"{SERVICE}.ExpectedMore",
                                           method.rsplit(".", 1)[0] + ".ExpectedMore"), r)
            self.check_error(ifaces, method, r)
            self.assertEqual(r.get("parameters", {}), {})
            return
        n = 0
        while True:
            r = c.recv()
            n += 1
            if "error" in r:
                self.check_error(ifaces, method, r)
                if r["error"] == self.EXPECTED_ERRORS.get(method):
                    break
                self.fail(f"{method} {flags} with valid parameters failed: {r}")
            self.check_reply(ifaces, method, r)
            if not r.get("continues"):
                break
            self.assertIn("more", flags, f"{method}: continues without more")
        if not self.streams(method):
            self.assertEqual(n, 1, f"{method}: one reply")


class Conformance(Checks, TpadTestCase):
    PRODUCT = "tpad"
    # Methods whose valid call still fails without a setup of their own: the declared error.
    EXPECTED_ERRORS = {"io.tpad.Admin.Adopt": "io.tpad.Admin.Conflict",
                       "io.tpad.Admin.Print": "io.tpad.Admin.InvalidParameter",  # no printer
                       "io.tpad.Admin.Retire": "io.tpad.Admin.NotFound"}
    OTHERS = ["io.tpad.Admin.Status", "io.tpad.Station.Lookup"]

    def setUp(self):
        super().setUp()
        psk = secrets.token_hex(16)
        s = self.sim(psk).start()
        self.d = self.daemon(upstream_url=s.url(), psk_hex=psk,
                             conf_extra="upstream.sessions = 2").start()

        def ready():
            with self.d.admin_client() as a:
                up = a.call("io.tpad.Admin.Status")["upstream"]
            return any(x["state"] == "ready" for x in up["sessions"])
        wait_for(ready, 15, "a session")
        self.n = 0
        self.known = self.new_eui()
        with self.d.station_client() as c:
            c.call("io.tpad.Station.Activate", {"devEUI": self.known, "tkmInfo": TKM})

    def new_eui(self):
        self.n += 1
        return f"00C0FFEE{self.n:08X}"

    def params(self, method):
        """Valid parameters for each method."""
        return {
            f"{SERVICE}.GetInfo": {},
            f"{SERVICE}.GetInterfaceDescription": {"interface": SERVICE},
            "io.tpad.Station.Activate": {"devEUI": self.new_eui(), "tkmInfo": TKM,
                                         "qr": {"format": "text"}},
            "io.tpad.Station.Lookup": {"devEUI": self.known, "qr": {"format": "svg"}},
            "io.tpad.Admin.Status": {},
            "io.tpad.Admin.Import": {"rows": [{"line": 1, "devEUI": self.new_eui(),
                                               "tkmInfo": TKM}], "final": True},
            "io.tpad.Admin.Export": {"format": "csv"},
            "io.tpad.Admin.ListDevices": {"limit": 3},
            "io.tpad.Admin.GetDevice": {"devEUI": self.known},
            "io.tpad.Admin.Metrics": {},
            "io.tpad.Admin.Backup": {"path": os.path.join(self.tmp, f"backup{self.new_eui()}.db")},
            "io.tpad.Admin.Adopt": {"devEUI": self.known},
            "io.tpad.Admin.Print": {"devEUI": self.known},
            "io.tpad.Admin.Retire": {"devEUI": "FFFFFFFFFFFFFFF0", "reason": "scrapped"},
        }[method]

    def streams(self, method):
        return method in ("io.tpad.Admin.Import", "io.tpad.Admin.Export")

    def oneway_ran(self, c, ifaces, method, params, flags):
        if method == "io.tpad.Station.Activate":
            self.send(c, "io.tpad.Station.Lookup", {"devEUI": params["devEUI"]}, ())
            r = wait_for(lambda: self.lookup(c, params["devEUI"]), 10, "oneway Activate")
            self.check_reply(ifaces, "io.tpad.Station.Lookup", r)

    def lookup(self, c, eui):
        r = c.recv()
        if "error" in r:
            self.assertEqual(r["error"], "io.tpad.Station.NotFound")
            self.send(c, "io.tpad.Station.Lookup", {"devEUI": eui}, ())
            return None
        return r

    def test_station_socket(self):
        n = self.walk(self.d.station_client)
        self.assertEqual(n, 4 * len(FLAGS))

    def test_admin_socket(self):
        n = self.walk(self.d.admin_client)
        self.assertEqual(n, 12 * len(FLAGS))

    def test_declared_errors(self):
        """Errors of bad calls carry what their declaration says, on both sockets."""
        with self.d.station_client() as c:
            _, ifaces = self.interfaces(c)
            cases = [
                ("io.tpad.Station.Activate", {"devEUI": "xyz", "tkmInfo": TKM},
                 "io.tpad.Station.InvalidParameter"),
                ("io.tpad.Station.Lookup", {"devEUI": "FFFFFFFFFFFFFFFF"},
                 "io.tpad.Station.NotFound"),
                (f"{SERVICE}.GetInterfaceDescription", {"interface": "no.such.Thing"},
                 f"{SERVICE}.InterfaceNotFound"),
                (f"{SERVICE}.GetInterfaceDescription", {"interface": 42},
                 f"{SERVICE}.InvalidParameter"),
                ("io.tpad.Station.Nope", {}, f"{SERVICE}.MethodNotFound"),
                ("no.such.Interface.Method", {}, f"{SERVICE}.InterfaceNotFound"),
            ]
            for method, params, want in cases:
                with self.subTest(method=method, want=want):
                    self.send(c, method, params, ())
                    r = c.recv()
                    self.assertEqual(r.get("error"), want, r)
                    self.check_error(ifaces, method if not method.startswith("no.") else
                                     f"{SERVICE}.X", r)
            # The reason for a bad parameter is in the interface's own InvalidParameter.
            self.send(c, "io.tpad.Station.Activate", {"devEUI": "xyz", "tkmInfo": TKM}, ())
            r = c.recv()
            self.assertEqual(r["parameters"]["parameter"], "devEUI")
            self.assertTrue(r["parameters"]["reason"])
        with self.d.admin_client() as c:
            _, ifaces = self.interfaces(c)
            for method, params, want in [
                    ("io.tpad.Admin.GetDevice", {"devEUI": "FFFFFFFFFFFFFFFF"},
                     "io.tpad.Admin.NotFound"),
                    ("io.tpad.Admin.ListDevices", {"state": "BOGUS"},
                     "io.tpad.Admin.InvalidParameter"),
                    ("io.tpad.Admin.Metrics", {"format": "xml"},
                     "io.tpad.Admin.InvalidParameter")]:
                with self.subTest(method=method, want=want):
                    self.send(c, method, params, ())
                    r = c.recv()
                    self.assertEqual(r.get("error"), want, r)
                    self.check_error(ifaces, method, r)

    def test_every_reply_is_whole_or_not_sent_when_memory_runs_out(self):
        """Each allocation of tpad failing in turn (test/failalloc) while it reads a call
        and works on it: a reply is whole (its declared type, every key it has with nothing
        failing: the token, the AppKey, the label) or not sent (an error, or the connection
        closes). jansson leaves out a key it cannot add: tpad must not send that."""
        if not tpadtest.failalloc_usable():
            self.skipTest("test/failalloc is not built with sanitizers (it replaces malloc)")
        self.d.stop()
        self.d.env["LD_PRELOAD"] = tpadtest.FAILALLOC
        self.d.start()
        lookup = {"devEUI": self.known, "qr": {"format": "svg"}}
        again = {"devEUI": self.known, "tkmInfo": TKM, "qr": {"format": "text"}}

        def alive():
            self.assertIsNone(self.d.proc.poll(), "tpad exited")
        swept = tpadtest.check_whole_under_failures(self, self.d.station, [
            ("io.tpad.Station.Lookup", lookup, False),
            ("io.tpad.Station.Activate", again, False),  # issued: answered from the store
            (f"{SERVICE}.GetInfo", {}, False),
        ], self.d.log_text_all, alive)
        swept.update(tpadtest.check_whole_under_failures(self, self.d.admin, [
            ("io.tpad.Admin.Status", {}, False),
            ("io.tpad.Admin.GetDevice", {"devEUI": self.known}, False),
            ("io.tpad.Admin.ListDevices", {"limit": 3}, False),
            ("io.tpad.Admin.Export", {"format": "csv"}, True),
        ], self.d.log_text_all, alive))
        print(f"allocations swept: {swept}", file=sys.stderr)
        self.assertGreater(min(swept.values()), 10, swept)

    def test_refused_call_carries_only_declared_fields(self):
        """A message refused before dispatch (upgrade, not JSON) gets
        org.varlink.service.InvalidParameter with only its declared field."""
        with self.d.station_client() as c:
            _, ifaces = self.interfaces(c)
            for raw in (b'{"method":"org.varlink.service.GetInfo","upgrade":true}',
                        b'{"method":"org.varlink.service.GetInfo","parameters":[]}',
                        b'not json'):
                c.send_raw(raw + b"\0")
                self.check_error(ifaces, f"{SERVICE}.GetInfo", c.recv())


class TpasConformance(Checks, TpasCase):
    """The same for tpas: the apps socket (io.tpad.AS) and the admin socket (io.tpad.AS and
    io.tpad.ASAdmin), with an LRC for SendDownlink and a device whose key an uplink brought."""

    PRODUCT = "tpas"
    # The radio metadata is passed on as the LRC sent it (see io.tpad.AS.varlink).
    UNTYPED = {"io.tpad.AS": ["Uplink.radio"]}
    OTHERS = ["io.tpad.ASAdmin.ListASTKs"]

    def setUp(self):
        super().setUp()
        self.lrc_sim = self.lrc(None, serve=True)
        # A webhook nobody answers: Status then carries its (typed) failures.
        self.t = self.tpas(lrc_url=f"http://127.0.0.1:{self.lrc_sim.port}",
                           extra="[webhook]\nurl = http://127.0.0.1:9/hook\n").start()
        self.lrc_sim.as_url = self.t.url
        self.lrc_sim.add_device(DEV, self.import_astk(self.t))
        self.assertEqual(self.lrc_sim.uplink(DEV, b"hello")[0], 200)

    def params(self, method):
        self.fport = getattr(self, "fport", 0) % 223 + 1  # each downlink its own port
        return {
            f"{SERVICE}.GetInfo": {},
            f"{SERVICE}.GetInterfaceDescription": {"interface": "io.tpad.AS"},
            "io.tpad.AS.Uplinks": {"after": 0, "follow": False},
            "io.tpad.AS.SendDownlink": {"devEUI": DEV, "fPort": self.fport, "payload": "0102",
                                        "confirmed": False},
            "io.tpad.AS.Status": {},
            "io.tpad.ASAdmin.ImportASTK": {
                "encryptedASKey": encrypt_astk(self.public_pem, os.urandom(16)),
                "customerID": "100122002"},
            "io.tpad.ASAdmin.ListASTKs": {},
        }[method]

    def streams(self, method):
        return method == "io.tpad.AS.Uplinks"

    def oneway_ran(self, c, ifaces, method, params, flags):
        if method == "io.tpad.AS.SendDownlink":
            wait_for(lambda: any(d["fport"] == params["fPort"]
                                 for d in self.lrc_sim.state["downlinks"]), 10,
                     "the oneway downlink at the LRC")
        elif method == "io.tpad.ASAdmin.ImportASTK":
            with tpadtest.Client(self.t.admin) as a:
                wait_for(lambda: any(x["customerID"] == "100122002" for x in
                                     a.call("io.tpad.ASAdmin.ListASTKs")["astks"]), 10,
                         "the oneway ASTK")

    def test_apps_socket(self):
        n = self.walk(lambda: tpadtest.Client(self.t.apps))
        self.assertEqual(n, (2 + 3) * len(FLAGS))

    def test_admin_socket(self):
        n = self.walk(lambda: tpadtest.Client(self.t.admin))
        self.assertEqual(n, (2 + 3 + 2) * len(FLAGS))
        # Every downlink the walk sent reached the LRC with its own counter.
        used = [d["fcnt_dn"] for d in self.lrc_sim.state["downlinks"]]
        self.assertEqual(len(used), len(set(used)))
        self.assertEqual(self.lrc_sim.state["violations"], [])


if __name__ == "__main__":
    tpadtest.main()
