#!/usr/bin/env python3
"""example_station: a minimal test station that activates one device and writes its QR label.

    example_station.py DEVEUI [TKM_INFO] [--label FILE] [--socket PATH] [--serial S]
                       [--generate-app-key]

With TKM_INFO (a device with a Secure Element) the device is activated with it; with
--generate-app-key tpad makes the AppKey, which is printed to be injected; with neither,
the device must have been imported before manufacturing. The label is a PNG written to
FILE (default DEVEUI.png). Exit status: 0 done, 1 tpad refused (the error is printed),
2 usage, 3 tpad cannot be reached; 75 (EX_TEMPFAIL) when retrying later may work.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tpad_client import (DEFAULT_STATION_SOCKET, Busy, Client, OutcomeUnknown,  # noqa: E402
                         TpadConnectionError, TpadError, UpstreamUnavailable)

EX_TEMPFAIL = 75


def main(argv=None):
    """Parse the command line, activate the device, write its label; return the exit status."""
    ap = argparse.ArgumentParser(description="Activate a LoRaWAN device with tpad and "
                                 "write its QR label.")
    ap.add_argument("dev_eui", metavar="DEVEUI", help="the device's DevEUI (16 hex digits)")
    ap.add_argument("tkm_info", metavar="TKM_INFO", nargs="?",
                    help="the Secure Element's TKM_INFO (20 hex digits)")
    ap.add_argument("--generate-app-key", action="store_true",
                    help="device without a Secure Element: let tpad make its AppKey")
    ap.add_argument("--serial", help="serial number printed in the QR code")
    ap.add_argument("--label", help="where to write the PNG label (default DEVEUI.png)")
    ap.add_argument("--socket", default=DEFAULT_STATION_SOCKET, help="tpad's station socket")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for tpad")
    args = ap.parse_args(argv)
    if args.tkm_info and args.generate_app_key:
        ap.error("give TKM_INFO or --generate-app-key, not both")
    label = args.label or f"{args.dev_eui.upper()}.png"

    try:
        with Client(args.socket, timeout=args.timeout) as tpad:
            dev = tpad.activate(args.dev_eui, tkm_info=args.tkm_info,
                                generate_app_key=args.generate_app_key, serial=args.serial,
                                qr_format="png")
    except TpadConnectionError as e:
        print(f"station: {e}", file=sys.stderr)
        return 3
    except (Busy, UpstreamUnavailable, OutcomeUnknown) as e:
        print(f"station: {e}; try again later", file=sys.stderr)
        return EX_TEMPFAIL
    except TpadError as e:
        print(f"station: tpad refused {args.dev_eui}: {e}", file=sys.stderr)
        return 1

    dev.save_label(label)
    print(f"devEUI      {dev.dev_eui}")
    print(f"ownerToken  {dev.owner_token}")
    if dev.has_app_key:
        print(f"appKey      {dev.app_key}")
    print(f"qrText      {dev.qr_text}")
    print(f"label       {label} ({len(dev.qr_bytes)} bytes, {dev.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
