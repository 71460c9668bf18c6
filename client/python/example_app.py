#!/usr/bin/env python3
"""example_app: a minimal application on tpas's apps socket; copy it to start yours.

    example_app.py [--socket PATH] [--state FILE] [--interval SECONDS] [--retry-max SECONDS]

It follows io.tpad.AS.Uplinks, prints each uplink decoded, and answers the devices that
ask for their configuration with io.tpad.AS.SendDownlink. The example devices speak:

    FPort 1, up:   a reading: temperature (int16, big-endian, 0.1 degC), humidity (uint8, %)
    FPort 2, up:   "what is my configuration?" (any payload)
    FPort 2, down: the reporting interval in seconds (uint16, big-endian): --interval

Anything else is printed as hexadecimal. Output, one line each, on standard output:

    uplink SEQ DEVEUI fCntUp N fPort P: what it says
    downlink DEVEUI fPort 2 interval S s: FCntDn N, LRC STATUS "its answer"

The last seq processed is kept in FILE (default example_app.seq), written atomically
after the uplink's processing (its downlink included), and the stream resumes after it:
stopped, killed or restarted, the application misses nothing and sees nothing twice,
save the one uplink it was processing when it was killed (or when tpas went away during
its downlink), which comes again: make processing idempotent (sending the interval twice
does no harm), or keep its results and the seq in one transaction of your own store.
Uplinks that tpas's store.retention-days removed before they were read are named
(prunedThrough) and skipped. When tpas stops or restarts, the application connects again
after 0.2 s, then twice as long each time up to --retry-max (default 10 s). Exit status:
0 on SIGTERM or SIGINT, 1 when tpas refuses the saved seq (a store put back from a
backup: see the message), 2 usage.

Standard library only, Python 3.9 or later, with tpad_client.py beside it.
"""

import argparse
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tpad_client import (AS, DEFAULT_APPS_SOCKET, Busy, Client,  # noqa: E402
                         InvalidParameter, StoreFailed, TpadConnectionError, TpadError)

FPORT_READING = 1
FPORT_CONFIG = 2
DOWNLINK_TIMEOUT = 30.0  # tpas answers within about twice its lrc.request-timeout


def load_seq(path):
    """The last seq processed, kept in path; 0 (from the oldest uplink kept) without one."""
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        return 0


def save_seq(path, seq):
    """Replace path's seq atomically and durably: a crash leaves the old one or the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{seq}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(d)
    finally:
        os.close(d)


def describe(up):
    """What an uplink says, in words."""
    data = bytes.fromhex(up["payload"])
    if up["encrypted"]:
        return f"MAC commands, encrypted ({len(data)} bytes)"
    if up.get("fPort") == FPORT_READING and len(data) == 3:
        temp, hum = struct.unpack(">hB", data)
        return f"temperature {temp / 10:.1f} C, humidity {hum} %"
    if up.get("fPort") == FPORT_CONFIG:
        return "asks for its configuration"
    return f"payload {up['payload'] or '(empty)'}"


class App:
    def __init__(self, args):
        self.args = args
        self.seq = load_seq(args.state)

    def run(self):
        """Follow the uplinks for ever, reconnecting whenever tpas goes away."""
        delay = 0.2
        while True:
            try:
                with Client(self.args.socket, timeout=None, interface=AS) as apps:
                    delay = 0.2
                    self.follow(apps)
                why = "tpas ended the stream (it is stopping)"
            except TpadConnectionError as e:  # not running, or it went away
                why = str(e)
            except (Busy, StoreFailed) as e:  # too many clients, or its store failed
                why = f"tpas: {e}"
            print(f"example_app: {why}; again in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, self.args.retry_max)

    def follow(self, apps):
        """Read the stream from the saved seq on; returns when tpas ends it."""
        print(f"example_app: following uplinks after seq {self.seq}", file=sys.stderr)
        for reply in apps.call_more("io.tpad.AS.Uplinks", after=self.seq, follow=True):
            gone = reply.get("prunedThrough")
            if gone is not None and gone > self.seq:
                print(f"example_app: missed uplinks {self.seq + 1} to {gone}: tpas removed "
                      f"them (store.retention-days) before they were read", file=sys.stderr)
                self.seq = gone
                save_seq(self.args.state, gone)
            up = reply.get("uplink")
            if up is not None:
                self.process(up)
                self.seq = up["seq"]
                save_seq(self.args.state, self.seq)

    def process(self, up):
        print(f"uplink {up['seq']} {up['devEUI']} fCntUp {up['fCntUp']} "
              f"fPort {up.get('fPort', '-')}: {describe(up)}")
        if up.get("fPort") == FPORT_CONFIG and not up["encrypted"]:
            self.send_interval(up["devEUI"])

    def send_interval(self, dev_eui):
        """Answer with the reporting interval. An error reply is printed and the stream goes
        on; with tpas unreachable (TpadConnectionError) the uplink is not done: its seq is
        not saved, and it comes again once the stream is back.

        Each downlink has a connection of its own: the stream's is taken by Uplinks, and
        tpas closes a connection left idle for limits.idle-timeout."""
        payload = struct.pack(">H", self.args.interval).hex()
        head = f"downlink {dev_eui} fPort {FPORT_CONFIG} interval {self.args.interval} s"
        for attempt in range(3):
            try:
                with Client(self.args.socket, timeout=DOWNLINK_TIMEOUT, interface=AS) as c:
                    r = c.call("io.tpad.AS.SendDownlink", devEUI=dev_eui, fPort=FPORT_CONFIG,
                               payload=payload)
                print(f"{head}: FCntDn {r['fCntDn']}, LRC {r['status']} \"{r['answer']}\"")
                return
            except Busy:  # nothing was spent: the LRC is slow or down for now
                time.sleep(1 + attempt)
            except TpadError as e:  # LrcFailed (FCntDn spent), UnknownDevice, NoLrc, ...
                print(f"{head}: {e}", file=sys.stderr)
                return
        print(f"{head}: tpas is busy, not sent", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Follow tpas's uplinks and answer some of them.")
    ap.add_argument("--socket", default=DEFAULT_APPS_SOCKET, help="tpas's apps socket")
    ap.add_argument("--state", default="example_app.seq",
                    help="where the last seq processed is kept")
    ap.add_argument("--interval", type=int, default=600,
                    help="reporting interval sent to devices that ask (seconds, 1-65535)")
    ap.add_argument("--retry-max", type=float, default=10.0,
                    help="longest wait between reconnections (seconds)")
    args = ap.parse_args(argv)
    if not 1 <= args.interval <= 65535:
        ap.error("--interval must be 1 to 65535")
    if args.retry_max < 0.2:
        ap.error("--retry-max must be at least 0.2")
    try:
        load_seq(args.state)
    except (OSError, ValueError) as e:
        ap.error(f"cannot read the seq in {args.state}: {e}")
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        App(args).run()
    except InvalidParameter as e:
        # The saved seq is past tpas's newest (its store was put back from a backup):
        # resuming would skip what it journals next. A person decides: delete FILE to
        # read all it keeps again, or write its lastSeq there to take only new ones.
        print(f"example_app: tpas refuses to resume after seq {load_seq(args.state)}: "
              f"{e.reason}; see {args.state}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
