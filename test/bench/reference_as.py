#!/usr/bin/env python3
"""reference_as: the LRC-AS tunnel endpoint an AS developer would write without tpas.

Python's http.server and the cryptography package, one uplink at a time: parse the JSON,
check the Token and Time, decrypt the AppSKey with the ASTK and the payload with the
AppSKey, INSERT and COMMIT into SQLite (WAL, synchronous=FULL) before answering 200. One
subscriber (a thread, as an application would) polls the table and counts what it sees;
when it has seen --expect rows it prints the monotonic time and the count.

With --threads it is a ThreadingHTTPServer (a thread per connection, as a developer who
expects concurrent LRC connections would write it); the commit stays one at a time.

Usage: reference_as.py --port N --key KEY --astk HEX --db FILE --expect N [--threads]
Only for the benchmark (test/bench/bench_tpas.py).
"""

import argparse
import hashlib
import http.server
import json
import sqlite3
import sys
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_ecb(key, data, decrypt=False):
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def frm_decrypt(key, dev_addr, fcnt, data):
    out = bytearray()
    for i in range((len(data) + 15) // 16):
        a = bytes([1, 0, 0, 0, 0, 0]) + dev_addr.to_bytes(4, "little") + \
            fcnt.to_bytes(4, "little") + bytes([0, i + 1])
        s = aes_ecb(key, a)
        out += bytes(x ^ y for x, y in zip(data[16 * i:16 * i + 16], s))
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--astk", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--threads", action="store_true",
                    help="ThreadingHTTPServer: a thread per connection")
    a = ap.parse_args()
    astk = bytes.fromhex(a.astk)
    db = sqlite3.connect(a.db, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS uplink (seq INTEGER PRIMARY KEY, dev_eui TEXT,"
               " fcnt INTEGER, payload TEXT, UNIQUE (dev_eui, fcnt))")
    db.commit()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without this, the body waits for the ACK of the headers (40 ms delayed ACK).
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def answer(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            query = urllib.parse.urlsplit(self.path).query
            signed, _, token = query.rpartition("&Token=")
            up = json.loads(body)["DevEUI_uplink"]
            mine = hashlib.sha256((up["CustomerID"] + up["DevEUI"] + str(up["FPort"]) +
                                   str(up["FCntUp"]) + up["payload_hex"] + signed +
                                   a.key.lower()).encode()).hexdigest()
            if mine != token:
                return self.answer(401, {"error": "bad Token"})
            appskey = aes_ecb(astk, bytes.fromhex(up["AppSKey"]), decrypt=True)
            plain = frm_decrypt(appskey, int(up["DevAddr"], 16), up["FCntUp"],
                                bytes.fromhex(up["payload_hex"]))
            with lock:
                cur = db.execute("INSERT OR IGNORE INTO uplink (dev_eui, fcnt, payload)"
                                 " VALUES (?, ?, ?)", (up["DevEUI"], up["FCntUp"], plain.hex()))
                db.commit()
            self.answer(200, {"seq": cur.lastrowid})

    def subscriber():
        sub = sqlite3.connect(a.db)
        last = seen = 0
        while seen < a.expect:
            rows = sub.execute("SELECT seq FROM uplink WHERE seq > ? ORDER BY seq",
                               (last,)).fetchall()
            if rows:
                seen += len(rows)
                last = rows[-1][0]
            else:
                time.sleep(0.001)
        print(json.dumps({"delivered": seen, "at": time.monotonic()}), flush=True)

    threading.Thread(target=subscriber, daemon=True).start()
    cls = http.server.ThreadingHTTPServer if a.threads else http.server.HTTPServer
    if a.threads:
        cls.request_queue_size = 1024  # every connection of the client is accepted at once
    srv = cls(("127.0.0.1", a.port), Handler)
    print(json.dumps({"listening": a.port}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
