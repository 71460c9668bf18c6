"""Secrets are wiped after use: the writable memory of a running daemon, read from outside
through /proc/PID/mem once its requests are done, holds no copy of the keys it handled.

Reading another process's memory needs ptrace permission. The daemons mark themselves not
dumpable, so that their own user cannot read it: the tests need root (CAP_SYS_PTRACE), and
skip without it or when Yama's ptrace_scope forbids it.
"""

import os
import re
import secrets
import signal

import tpadtest
from tpadtest import wait_for
from test_activation import Base, eui
from test_cloud import DxBase
from test_tpas import DEV, DEV2, TpasCase

SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
# AddressSanitizer's shadow on x86_64 (low and high shadow, 14 TiB reserved): it holds the
# poison state of the heap, never the program's bytes, so a sanitized build's scan skips it.
ASAN_SHADOW = (0x7FFF7000, 0x10007FFF8000)
CHUNK = 16 << 20


def writable_regions(pid):
    """(start, end, name) of every writable private mapping of pid: heap, stacks,
    anonymous mappings (other threads' stacks, malloc arenas) and the data of every
    library."""
    regions = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5].strip() if len(fields) > 5 else ""
            shadow = not name and ASAN_SHADOW[0] <= start and end <= ASAN_SHADOW[1]
            if fields[1].startswith("rw") and name != "[vvar]" and not shadow:
                regions.append((start, end, name))
    return regions


def scan(pid, secrets_by_name):
    """Where each secret (bytes) is found in pid's writable memory:
    [(name, region name, address)]."""
    found = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, region in writable_regions(pid):
            # In chunks that overlap by less than a key, so no copy is cut in two or seen
            # twice.
            for at in range(start, end, CHUNK):
                try:
                    mem.seek(at)
                    data = mem.read(min(CHUNK + 63, end - at))
                except OSError:
                    break  # unmapped meanwhile, or a guard page
                for name, secret in secrets_by_name:
                    for m in re.finditer(re.escape(secret), data):
                        if m.start() < CHUNK:
                            found.append((name, region or "[anon]", hex(at + m.start())))
    return found


def key_forms(label, key_hex):
    """A key as it may sit in memory: binary, and hex in both cases."""
    return [(label + " binary", bytes.fromhex(key_hex)),
            (label + " HEX", key_hex.upper().encode()),
            (label + " hex", key_hex.lower().encode())]


class Scanner:
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("the daemons are not dumpable: reading their memory needs root")
        try:
            with open(SCOPE) as f:
                if int(f.read()) >= 2:
                    self.skipTest("kernel.yama.ptrace_scope >= 2: /proc/PID/mem unreadable")
        except FileNotFoundError:
            pass

    def copies(self, pid, keys):
        """Where each form of each key in keys ({label: hex}) is found in pid's memory."""
        return scan(pid, [f for label, k in keys.items() for f in key_forms(label, k)])

    def assert_wiped(self, pid, keys, what):
        """No form of any key in keys ({label: hex}) stays in pid's writable memory. The
        last requests' buffers go back to the allocator when they end; this waits a little
        for timers and threads that finish after the reply."""
        last = []

        def clean():
            last[:] = self.copies(pid, keys)
            return not last
        try:
            wait_for(clean, 3, what)
        except AssertionError:
            self.fail(f"{what}: {len(last)} copies left: {last[:20]}")


def signal_masks(pid):
    """{"name (tid)": (blocked, caught)}: the signal bit masks of each of pid's threads."""
    ret = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        ret[f"{fields['Name']} ({tid})"] = (int(fields["SigBlk"], 16), int(fields["SigCgt"], 16))
    return ret


class NoSignalFrames:
    """The stop and reload signals never interrupt a thread: a handler would run on the
    interrupted thread's stack, below a signal frame holding its registers (key bytes among
    them), which stays there after the handler returns. Every thread blocks them and none
    has a handler; the daemon reads them from a signalfd, and still stops and reloads."""

    STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def assert_no_signal_frames(self, d, threads):
        bits = sum(1 << (s - 1) for s in self.STOP)
        masks = signal_masks(d.proc.pid)
        self.assertGreaterEqual(len(masks), threads, masks)
        for name, (blocked, caught) in masks.items():
            self.assertEqual(blocked & bits, bits, f"{name} does not block them: {blocked:x}")
            self.assertEqual(caught & bits, 0, f"{name} has a handler for them: {caught:x}")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP:" in d.log_text(), 10, "the reload")
        self.assertIsNone(d.proc.poll())
        self.assertEqual(d.stop(), 0)


class TpadMemory(Scanner, NoSignalFrames, Base):
    def test_signals_never_interrupt_a_thread(self):
        # The loop, and the store's writer and reader threads.
        self.assert_no_signal_frames(self.start(), 3)

    def test_app_keys_wiped_after_activation(self):
        d = self.start()
        keys = {}
        with d.station_client() as c:
            # AppKeys given by the station, in either case, and AppKeys tpad generated.
            for i in range(6):
                key = secrets.token_hex(16)
                r = c.call("io.tpad.Station.Activate",
                           {"devEUI": eui(i + 1), "appKey": key.upper() if i % 2 else key})
                keys[f"given {i}"] = key
            for i in range(6, 10):
                r = c.call("io.tpad.Station.Activate", {"devEUI": eui(i + 1),
                                                        "generateAppKey": True})
                keys[f"generated {i}"] = r["device"]["appKey"]
            # Handed out again from the store (the AppKey unsealed), and looked up.
            c.call("io.tpad.Station.Activate", {"devEUI": eui(1), "appKey": keys["given 0"]})
            c.call("io.tpad.Station.Lookup", {"devEUI": eui(7)})
        # Imported (given and generated), exported as CSV, the generated one looked up.
        with d.admin_client() as a:
            rows = [{"line": 2, "devEUI": eui(20), "appKey": secrets.token_hex(16)},
                    {"line": 3, "devEUI": eui(21), "appKey": secrets.token_hex(16).upper()},
                    {"line": 4, "devEUI": eui(22)}]
            a.call_more("io.tpad.Admin.Import", {"rows": rows, "generateAppKeys": True,
                                                 "final": True})
            keys["imported 0"], keys["imported 1"] = rows[0]["appKey"], rows[1]["appKey"]
            a.call_more("io.tpad.Admin.Export", {"format": "csv"})
        with d.station_client() as c:
            keys["imported 2"] = c.call("io.tpad.Station.Lookup",
                                        {"devEUI": eui(22)})["device"]["appKey"]
        # The cloud has them all (the test is about memory, not that).
        self.assertEqual(len(self.s.devices()), 13)
        self.assert_wiped(d.proc.pid, keys, "AppKeys in tpad's memory after activation")

    def test_app_keys_in_the_clouds_answers_wiped(self):
        """A cloud that shows the appKey in its answers (import and query): the HTTP
        buffers that received them leave no copy once the answers are read."""
        d = self.start()
        self.s.faults(echo_app_key=True)
        keys = {}
        with d.station_client() as c:
            for i in range(4):
                key = secrets.token_hex(16)
                c.call("io.tpad.Station.Activate", {"devEUI": eui(0x40 + i), "appKey": key})
                keys[f"answered {i}"] = key
        # An import whose answer is lost is settled by a query, whose answer shows it.
        self.s.faults(drop_before_answer=1.0)
        key = secrets.token_hex(16)
        with d.station_client() as c:
            with self.assertRaises(tpadtest.VarlinkError):
                c.call("io.tpad.Station.Activate", {"devEUI": eui(0x50), "appKey": key})
        self.s.faults(drop_before_answer=0)
        keys["queried"] = key
        with d.station_client() as c:
            r = c.call("io.tpad.Station.Activate", {"devEUI": eui(0x50), "appKey": key})
        self.assertEqual(r["device"]["state"], "ISSUED")
        self.assertGreater(self.s.counters()["queries"], 0)
        self.assert_wiped(d.proc.pid, keys, "AppKeys of the cloud's answers in tpad's memory")


class TpadKeyPoolMemory(Scanner, DxBase):
    def test_handed_out_pool_keys_wiped(self):
        s = self.dx_sim()
        rsa = os.path.join(self.tmp, "tpa-rsa.key")
        self.daemon().tpactl("keygen-rsa", rsa, "--bits", "2048", check=0)
        d = self.dx_daemon(s, conf=("device.app-key-source = cloud-hsm\n"
                                    "device.app-key-pool = 4\n"
                                    f"device.rsa-key-file = {rsa}")).start()

        def available():
            with d.admin_client() as a:
                return a.call("io.tpad.Admin.Status")["appKeys"]["available"]
        wait_for(lambda: available() == 8, 15, "the first fill of the key pool")
        keys = {}
        with d.station_client() as c:
            for i in range(3):
                r = c.call("io.tpad.Station.Activate", {"devEUI": eui(0x100 + i),
                                                        "generateAppKey": True})
                keys[f"pool key {i}"] = r["device"]["appKey"]
        # The keys still in the pool, not handed out yet, stay in memory by design (the
        # pool is there so that a station never waits for the cloud's HSM): only the
        # handed-out ones are looked for.
        self.assertEqual(available(), 5)
        self.assert_wiped(d.proc.pid, keys, "handed-out pool keys in tpad's memory")


class TpasMemory(Scanner, NoSignalFrames, TpasCase):
    def test_signals_never_interrupt_a_thread(self):
        # The loop and the journal's writer thread.
        self.assert_no_signal_frames(self.tpas().start(), 2)

    def test_session_keys_only_in_the_cache(self):
        t = self.tpas().start()
        astk = self.import_astk(t)
        s = self.lrc(t)
        devs = [DEV, DEV2, "70B3D57ED0005678"]
        for dev in devs:
            s.add_device(dev, astk)
        for dev in devs:
            for i in range(2):
                self.assertEqual(s.uplink(dev, b"payload %d" % i)[0], 200)
        self.assertEqual(s.uplink(DEV, b"no key field", with_key=False)[0], 200)
        self.assertEqual(len(t.uplinks()), 7)
        # The ASTK is unsealed for each unwrap and wiped after it.
        self.assert_wiped(t.proc.pid, {"ASTK": astk.hex()}, "the ASTK in tpas's memory")
        # Each AppSKey is kept unsealed in the session cache (one binary copy, so that an
        # uplink without the AppSKey field needs no unseal): no other copy, and never hex.
        keys = {dev: s.state["devices"][dev]["appskey"] for dev in devs}
        found = self.copies(t.proc.pid, keys)
        for dev in devs:
            self.assertEqual([f for f in found if f[0] == dev + " binary"][1:], [], dev)
        self.assertEqual([f for f in found if not f[0].endswith(" binary")], [])


if __name__ == "__main__":
    tpadtest.main()
