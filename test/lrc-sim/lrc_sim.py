#!/usr/bin/env python3
"""lrc_sim: a simulated ThingPark LRC for tpas's tests and demo.

It plays the network side of the LRC-AS tunnel:
  * uplinks: POSTs signed DevEUI_uplink messages (JSON or XML) to tpas, with the
    AppSKey field encrypted with the ASTK (one AES block, or an RFC 3394 key
    envelope with a KEK label), FRMPayload encrypted with the device's AppSKey;
  * downlinks: serves POST /thingpark/lrc/rest/downlink, checks the Token, decrypts
    the payload with the AppSKey it handed out and the FCntDn sent, and records a
    reuse of any FCntDn with one key as a violation, and one that comes after a
    higher one with the same key (the device would drop it);
  * faults on demand: a bad Token, a stale Time, a dropped answer (the LRC retries),
    downlink answers with an error status;
  * state (devices, counters, downlinks received) in a JSON file that survives a
    restart of the simulator.

As a library: LrcSim(...). As a program, the steps of tpas's setup (README.md) by hand:
  lrc_sim.py device --state FILE --dev-eui EUI --public-key as-public.pem
      a device joins: a new ASTK for it, printed as Key Manager's encryptedASKey
      (for tpactl as import-astk); again for another device, the same ASTK
  lrc_sim.py serve --state FILE --key KEY [--port N]          downlink server
  lrc_sim.py uplink --state FILE --key KEY --url URL --dev-eui EUI (--text TEXT | --hex HEX)
      [--fport N] [--xml]
The three share the state file: a device added or an uplink sent while serve runs is
seen by its next downlink.
"""

import argparse
import datetime
import hashlib
import http.client
import http.server
import json
import os
import socketserver
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DOWNLINK_PATH = "/thingpark/lrc/rest/downlink"


def aes_ecb(key, block, decrypt=False):
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def frm_crypt(key, dev_addr, fcnt, direction, data):
    """LoRaWAN 1.0.x FRMPayload encryption (the same operation decrypts)."""
    out = bytearray()
    for i in range((len(data) + 15) // 16):
        a = bytes([1, 0, 0, 0, 0, direction]) + dev_addr.to_bytes(4, "little") + \
            fcnt.to_bytes(4, "little") + bytes([0, i + 1])
        s = aes_ecb(key, a)
        chunk = data[16 * i:16 * i + 16]
        out += bytes(x ^ y for x, y in zip(chunk, s))
    return bytes(out)


def token(*parts):
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def lrc_time(dt=None):
    """A Time the way the LRC writes it: 2019-04-29T18:21:17.290+02:00."""
    dt = dt or datetime.datetime.now(datetime.timezone.utc).astimezone()
    s = dt.isoformat(timespec="milliseconds")
    return s


def encrypt_astk(public_pem, astk):
    """What Key Manager returns: encryptedASKey (hex), RSA PKCS#1 v1.5 for the AS's key."""
    pub = serialization.load_pem_public_key(public_pem.encode() if isinstance(public_pem, str)
                                            else public_pem)
    return pub.encrypt(astk, padding.PKCS1v15()).hex()


# The fields ThingPark's LRC adds to an uplink beside the ones tpas reads (three base
# stations' reception, the customer's data, the radio settings): with them (build_uplink's
# extra) a body is about 1.3 KB, as the LRC posts them; without, 0.4 KB.
FULL_RADIO = {
    "ADRbit": 1, "MType": 2, "Lrcid": "00000201", "LrrESP": -42.2, "SubBand": "G1",
    "Channel": "LC2", "DevLrrCnt": 3, "Late": 0, "LrrLAT": 48.874855, "LrrLON": 2.333276,
    "Lrrs": {"Lrr": [{"Lrrid": "FF0109A4", "Chain": 0, "LrrRSSI": -41.5, "LrrSNR": 9.25,
                      "LrrESP": -42.2},
                     {"Lrrid": "FF0109B1", "Chain": 0, "LrrRSSI": -97.0, "LrrSNR": 3.5,
                      "LrrESP": -99.1},
                     {"Lrrid": "FF010A02", "Chain": 1, "LrrRSSI": -113.0, "LrrSNR": -6.75,
                      "LrrESP": -120.5}]},
    "CustomerData": {"alr": {"pro": "ACME/THERMO", "ver": "2"}, "tags": ["line-3", "hall-b"],
                     "name": "thermometer 0042"},
    "ModelCfg": "0", "BaseStationData": {"doms": [], "name": "gw-hall-b"},
    "InstantPER": 0.02, "MeanPER": 0.013, "AckRequested": 0, "rawMacCommands": "",
    "TxPower": 14.0, "NbTrans": 1, "Frequency": 868.1, "DynamicClass": "A",
    "DriverCfg": {"mod": {"pId": "acme", "mId": "thermo", "ver": "2"},
                  "app": {"pId": "acme", "mId": "thermo-app", "ver": "1"}},
}


class LrcSim:
    """The simulated LRC. key is the tunnel key as text (TIAK / LRC-AS key)."""

    def __init__(self, state_file, key, as_url=None, as_id="tpas-test", cafile=None,
                 shared=False):
        self.state_file = state_file
        # shared: other processes (lrc_sim.py device, uplink) write the state file too;
        # each downlink reads it again first.
        self.shared = shared
        self.cafile = cafile  # for an https:// as_url: the CA that signed tpas's certificate
        self.key = key
        self.as_url = as_url
        self.as_id = as_id
        self.lock = threading.Lock()
        # downlink_status: answer downlinks with this status; downlink_answer: with these
        # bytes as the body of an accepted downlink (any encoding).
        # downlink_delay: seconds each downlink waits before it is handled (a slow LRC).
        self.faults = {"downlink_status": None, "downlink_answer": None, "downlink_delay": 0}
        self.server = None
        self.state = {"devices": {}, "downlinks": [], "violations": []}
        if os.path.exists(state_file):
            with open(state_file) as f:
                self.state = json.load(f)

    def save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    # Devices and keys.

    def add_device(self, dev_eui, astk, customer_id="100122002", dev_addr=None,
                   appskey=None, kek_label=None, fcnt_up=0):
        """A device joins: a fresh AppSKey, handed to the AS encrypted with astk."""
        appskey = appskey or os.urandom(16)
        dev = {
            "customer_id": customer_id,
            "dev_addr": dev_addr or os.urandom(4).hex().upper(),
            "appskey": appskey.hex(),
            "astk": astk.hex(),
            "kek_label": kek_label,
            "fcnt_up": fcnt_up,
            "fcnt_dn": 0,
        }
        with self.lock:
            self.state["devices"][dev_eui.upper()] = dev
            self.save()
        return dev

    def appskey_field(self, dev):
        astk = bytes.fromhex(dev["astk"])
        key = bytes.fromhex(dev["appskey"])
        if dev.get("kek_label"):
            return {"KEKLabel": dev["kek_label"], "AESKey": keywrap.aes_key_wrap(astk, key).hex()}
        # tpas decrypts one block with the ASTK, so the LRC encrypts it.
        return aes_ecb(astk, key).hex()

    # Uplinks.

    def build_uplink(self, dev_eui, payload, fport=1, fmt="json", with_key=True, fcnt=None,
                     time=None, key=None, extra=None):
        """The (path?query, body, content type) of one uplink POST; fcnt defaults to the next."""
        dev_eui = dev_eui.upper()
        dev = self.state["devices"][dev_eui]
        if fcnt is None:
            fcnt = dev["fcnt_up"]
        t = time or lrc_time()
        enc = frm_crypt(bytes.fromhex(dev["appskey"]), int(dev["dev_addr"], 16), fcnt, 0,
                        payload).hex() if payload else ""
        fields = {
            "Time": t, "DevEUI": dev_eui, "FPort": fport, "FCntUp": fcnt,
            "FCntDn": dev["fcnt_dn"], "payload_hex": enc, "mic_hex": "00000000",
            "DevAddr": dev["dev_addr"], "CustomerID": dev["customer_id"],
            "LrrRSSI": -41.5, "LrrSNR": 9.25, "SpFact": 7, "Lrrid": "FF0109A4",
        }
        if with_key:
            fields["AppSKey"] = self.appskey_field(dev)
        if extra:
            fields.update(extra)
        q = urllib.parse.urlencode([("LrnDevEui", dev_eui), ("LrnFPort", str(fport)),
                                    ("LrnInfos", "TWA_%s.1.AS-1-1" % dev["customer_id"]),
                                    ("AS_ID", self.as_id), ("Time", t)], safe=":")
        tok = token(dev["customer_id"], dev_eui, str(fport), str(fcnt), enc, q,
                    (key or self.key).lower())
        target = "?" + q + "&Token=" + tok
        if fmt == "json":
            body = json.dumps({"DevEUI_uplink": fields}).encode()
            ctype = "application/json"
        else:
            body = self._xml(fields).encode()
            ctype = "application/xml"
        return target, body, ctype

    @staticmethod
    def _xml(fields):
        from xml.sax.saxutils import escape

        def element(k, v):
            if isinstance(v, list):  # a repeated element
                return "".join(element(k, iv) for iv in v)
            if isinstance(v, dict):
                return f"<{k}>" + "".join(element(ik, iv) for ik, iv in v.items()) + f"</{k}>"
            return f"<{k}>{escape(str(v))}</{k}>"
        parts = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<DevEUI_uplink xmlns="http://uri.actility.com/lora">']
        parts += [element(k, v) for k, v in fields.items()]
        parts.append("</DevEUI_uplink>")
        return "\n".join(parts)

    def post(self, target, body, ctype, path=None, timeout=30):
        """POST to tpas (at path, default the AS URL's) on a connection of its own; returns
        (status, parsed JSON answer or text)."""
        u = urllib.parse.urlsplit(self.as_url)
        path = path or u.path or "/"
        if u.scheme == "https":
            import ssl
            ctx = ssl.create_default_context(cafile=self.cafile)
            ctx.check_hostname = False
            c = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ctx)
        else:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            c.request("POST", path + target, body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode(errors="replace")

    def uplink(self, dev_eui, payload, fmt="json", advance=True, **kw):
        """Send one uplink; on a 200 the device's FCntUp moves on (like a real device)."""
        target, body, ctype = self.build_uplink(dev_eui, payload, fmt=fmt, **kw)
        status, ans = self.post(target, body, ctype)
        if status == 200 and advance and kw.get("fcnt") is None:
            with self.lock:
                self.state["devices"][dev_eui.upper()]["fcnt_up"] += 1
                self.save()
        return status, ans

    # Downlinks.

    def start(self, port=0, tls=None):
        """Serve downlinks on 127.0.0.1:port; tls=(certfile, keyfile) serves HTTPS."""
        def answer(target):
            time.sleep(self.faults.get("downlink_delay") or 0)
            return self.handle_downlink(target)
        self.server = serve_posts(answer, port, tls)
        return self.server.server_address[1]

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def handle_downlink(self, target):
        path, _, query = target.partition("?")
        if path != DOWNLINK_PATH:
            return 404, "no such path"
        signed, sep, tok = query.rpartition("&Token=")
        if not sep or token(signed, self.key) != tok.lower():
            with self.lock:
                self.state["violations"].append({"bad_token": query})
                self.save()
            return 401, "bad Token"
        q = dict(urllib.parse.parse_qsl(signed, keep_blank_values=True))
        dev_eui = q.get("DevEUI", "").upper()
        with self.lock:
            if self.shared and os.path.exists(self.state_file):
                with open(self.state_file) as f:
                    self.state = json.load(f)
            dev = self.state["devices"].get(dev_eui)
            if not dev:
                return 404, "unknown DevEUI"
            if self.faults.get("downlink_status"):
                return (self.faults["downlink_status"],
                        self.faults.get("downlink_answer") or "fault on demand")
            if "FCntDn" not in q:
                self.state["violations"].append({"no_fcntdn": dev_eui})
                self.save()
                return 400, "FCntDn missing (end-to-end encryption needs it)"
            fcnt = int(q["FCntDn"])
            used = [d["fcnt_dn"] for d in self.state["downlinks"]
                    if d["dev_eui"] == dev_eui and d["appskey"] == dev["appskey"]]
            if fcnt in used:
                self.state["violations"].append({"fcnt_reused": fcnt, "dev_eui": dev_eui})
            elif used and fcnt < max(used):
                # Queued behind a higher one, it reaches the device after it: the device
                # drops a downlink whose FCntDn is not above the last it took.
                self.state["violations"].append({"fcnt_behind": fcnt, "after": max(used),
                                                 "dev_eui": dev_eui})
            plain = frm_crypt(bytes.fromhex(dev["appskey"]), int(dev["dev_addr"], 16), fcnt, 1,
                              bytes.fromhex(q.get("Payload", "")))
            self.state["downlinks"].append({
                "dev_eui": dev_eui, "fport": int(q.get("FPort", "0")), "fcnt_dn": fcnt,
                "payload": plain.hex(), "appskey": dev["appskey"], "as_id": q.get("AS_ID"),
                "time": q.get("Time"), "confirmed": q.get("Confirmed") == "1"})
            dev["fcnt_dn"] = max(dev["fcnt_dn"], fcnt + 1)
            self.save()
        return 200, self.faults.get("downlink_answer") or "Request queued by LRC"


def serve_posts(handle, port=0, tls=None, quiet=False):
    """A threaded HTTP server on 127.0.0.1:port, serving on a daemon thread, that answers
    each POST (its body read) with handle(target) -> (status, text); a status of None
    reads the request and loses the answer (the connection is closed). tls=(certfile,
    keyfile) serves HTTPS; quiet leaves out the tracebacks of connections the client
    dropped. Returns the server (server_address, shutdown)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The answer's head and body go out in two writes: without TCP_NODELAY the
        # second waits for the client's delayed ACK (40 ms a downlink).
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            status, text = handle(self.path)
            if status is None:
                self.close_connection = True
                return
            data = text if isinstance(text, bytes) else text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            if not quiet:
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", port), Handler)
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--state", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--port", type=int, default=0)
    u = sub.add_parser("uplink")
    u.add_argument("--state", required=True)
    u.add_argument("--key", required=True)
    u.add_argument("--url", required=True)
    u.add_argument("--dev-eui", required=True)
    what = u.add_mutually_exclusive_group(required=True)
    what.add_argument("--text")
    what.add_argument("--hex", type=bytes.fromhex, help="the payload in hexadecimal")
    u.add_argument("--fport", type=int, default=1)
    u.add_argument("--xml", action="store_true")
    d = sub.add_parser("device")
    d.add_argument("--state", required=True)
    d.add_argument("--dev-eui", required=True)
    d.add_argument("--public-key", required=True, help="the PEM of tpactl as keygen")
    a = ap.parse_args()
    sim = LrcSim(a.state, getattr(a, "key", ""), as_url=getattr(a, "url", None),
                 shared=a.cmd == "serve")
    if a.cmd == "device":
        with open(a.public_key) as f:
            pem = f.read()
        # One ASTK per state file, as Key Manager keeps one per AS.
        astk = bytes.fromhex(sim.state.get("astk") or os.urandom(16).hex())
        sim.state["astk"] = astk.hex()
        sim.add_device(a.dev_eui, astk)
        print(encrypt_astk(pem, astk))
    elif a.cmd == "serve":
        port = sim.start(a.port)
        print(port, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            sim.stop()
    else:
        if a.dev_eui.upper() not in sim.state["devices"]:
            ap.error(f"no device {a.dev_eui} in {a.state}: add it first with lrc_sim.py "
                     f"device --state {a.state} --dev-eui {a.dev_eui} --public-key PEM")
        payload = a.hex if a.text is None else a.text.encode()
        status, ans = sim.uplink(a.dev_eui, payload, fport=a.fport,
                                 fmt="xml" if a.xml else "json")
        print(status, json.dumps(ans))

if __name__ == "__main__":
    main()
