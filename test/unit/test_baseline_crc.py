"""The TR005 CRC of test/bench/baseline_activate.sh under set -e, against a reference.

The script once exited whenever a bare (( )) in its CRC loop evaluated to zero; this runs
its crc16 function exactly as the script does (set -euo pipefail) over many strings.
"""

import os
import random
import string
import subprocess
import sys

SCRIPT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "bench", "baseline_activate.sh")


def crc16_modbus(s):
    c = 0xFFFF
    for ch in s.encode():
        c ^= ch
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return f"{c:04X}"


def main():
    with open(SCRIPT) as f:
        text = f.read()
    start = text.index("crc16() {")
    func = text[start:text.index("\n}\n", start) + 3]
    rng = random.Random(13)
    alphabet = string.ascii_uppercase + string.digits + ":"
    cases = ["", "123456789", "A", "\x01", "\xff"[:0]]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
              for _ in range(300)]
    cases += [chr(b) for b in range(32, 127)]
    # Strings that drive the register to zero (c ^= b with c == b), which a bare (( ))
    # takes for a failure: found by search, as DevEUIs of a real run would hit them.
    zeros = []
    for a in alphabet:
        for b in alphabet:
            for d in alphabet:
                st = int(crc16_modbus(a + b + d), 16)
                if 32 <= st < 127 and chr(st) not in "\\":
                    zeros.append(a + b + d + chr(st) + "X")
    assert zeros, "no zero-reaching string found"
    cases += zeros[:20]
    script = "set -euo pipefail\n" + func + \
        'while IFS= read -r line; do crc16 "$line"; echo "$crc"; done\n'
    p = subprocess.run(["bash", "-c", script], input="".join(c + "\n" for c in cases),
                       capture_output=True, text=True, timeout=120)
    got = p.stdout.split()
    want = [crc16_modbus(c) for c in cases]
    if p.returncode != 0 or got != want:
        bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))
        print(f"FAIL: exit {p.returncode}, first difference at case {bad} "
              f"({cases[bad]!r} if any): got {got[bad:bad + 1]}, want {want[bad]}")
        return 1
    if crc16_modbus("123456789") != "4B37":
        print("FAIL: reference")
        return 1
    print(f"ok: {len(cases)} strings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
