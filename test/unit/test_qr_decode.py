#!/usr/bin/env python3
"""QR images decoded back: PNG, SVG and text renderings of TR005 labels read by zbarimg.

Usage: test_qr_decode.py TEST-QR-PROGRAM. The program's "render" mode writes each image;
SVG paths and text half blocks are turned back into bitmaps here, so every format's
modules, not just its syntax, are checked. The CRC is computed independently here too.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def crc16_modbus(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def tr005(join, dev, profile, token=None, serial=None):
    text = "LW:D0:%s:%s:%s" % (join, dev, profile)
    if token:
        text += ":O" + token
    if serial:
        text += ":S" + serial
    return text + ":C%04X" % crc16_modbus(text.encode())


def zbar(path):
    r = subprocess.run(["zbarimg", "--raw", "-q", path], capture_output=True, timeout=60)
    if r.returncode != 0:
        return None
    return r.stdout.decode("utf-8", "replace").rstrip("\n")


def render(tool, tmp, fmt, level, scale, margin, text):
    out = os.path.join(tmp, "qr-%s-%s-%d-%d.%s" % (fmt, level, scale, margin, fmt))
    r = subprocess.run([tool, "render", fmt, level, str(scale), str(margin), text, out],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("render %s %s: %s" % (fmt, level, r.stderr.strip()))
        return None, 0
    return out, int(r.stdout.strip())


def write_pgm(path, bitmap, zoom):
    """bitmap: rows of booleans (True = dark); written as a white-on-black-free PGM."""
    h = len(bitmap) * zoom
    w = len(bitmap[0]) * zoom
    with open(path, "wb") as f:
        f.write(b"P5\n%d %d\n255\n" % (w, h))
        for row in bitmap:
            line = bytes(0 if dark else 255 for dark in row for _ in range(zoom))
            for _ in range(zoom):
                f.write(line)


def svg_bitmap(path, modules, scale, margin):
    """Check the SVG's structure and rasterize its path of rectangles."""
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(path).getroot()  # raises if not well-formed
    side = (modules + 2 * margin) * scale
    if root.tag != ns + "svg":
        fail("svg root is %s" % root.tag)
    if root.get("viewBox") != "0 0 %d %d" % (side, side):
        fail("svg viewBox %s, want side %d" % (root.get("viewBox"), side))
    if root.get("width") != str(side) or root.get("height") != str(side):
        fail("svg width/height %s/%s" % (root.get("width"), root.get("height")))
    rect = root.find(ns + "rect")
    if rect is None or rect.get("fill") != "#fff":
        fail("svg has no white background")
    paths = root.findall(ns + "path")
    if len(paths) != 1 or paths[0].get("fill") != "#000":
        fail("svg wants exactly one black path, has %d" % len(paths))
        return None
    d = paths[0].get("d")
    px = [[False] * side for _ in range(side)]
    cmds = re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-(\d+)z", d)
    if "".join("M%s %sh%sv%sh-%sz" % c for c in cmds) != d:
        fail("svg path has commands the rasterizer does not know")
        return None
    for x, y, w, h, w2 in cmds:
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w != int(w2) or x + w > side or y + h > side:
            fail("svg rect out of range")
            return None
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                px[yy][xx] = True
    return px


def text_bitmap(path, modules, margin):
    """Turn UTF-8 half blocks back into module rows."""
    side = modules + 2 * margin
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines[-1] != "":
        fail("text does not end with a newline")
    lines = lines[:-1]
    if len(lines) != (side + 1) // 2:
        fail("text has %d lines, want %d" % (len(lines), (side + 1) // 2))
    cells = {" ": (False, False), "\u2580": (True, False), "\u2584": (False, True),
             "\u2588": (True, True)}
    rows = []
    for line in lines:
        if len(line) != side or any(c not in cells for c in line):
            fail("text line of %d chars (want %d) or unknown characters" % (len(line), side))
            return None
        rows.append([cells[c][0] for c in line])
        rows.append([cells[c][1] for c in line])
    return rows[:side]


def check_decodes(what, path, want):
    got = zbar(path)
    if got != want:
        fail("%s decodes to %r, want %r" % (what, got, want))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    tool = sys.argv[1]
    if not shutil.which("zbarimg"):
        print("zbarimg not found (Debian package zbar-tools)", file=sys.stderr)
        return 1
    spec = tr005("1122334455667788", "AABBCCDDEEFF0011", "AABB1122", "AABBCCDDEEFF")
    label = tr005("70B3D57ED0000001", "0123D345666E2DBD", "00000000",
                  "0123456789ABCDEF0123456789ABCDEF", "YYWW000042")
    checks = 0
    with tempfile.TemporaryDirectory(prefix="tpad-qr-") as tmp:
        for text in (spec, label):
            for level in "LMQH":
                for scale, margin in ((4, 4), (2, 2), (3, 0)):
                    png, modules = render(tool, tmp, "png", level, scale, margin, text)
                    if png and margin > 0:
                        check_decodes("png %s scale %d" % (level, scale), png, text)
                        checks += 1
                    svg, modules = render(tool, tmp, "svg", level, scale, margin, text)
                    if svg:
                        bm = svg_bitmap(svg, modules, scale, margin)
                        if bm and margin > 0:
                            pgm = svg + ".pgm"
                            write_pgm(pgm, bm, 1)
                            check_decodes("svg %s scale %d" % (level, scale), pgm, text)
                        checks += 1
                    txt, modules = render(tool, tmp, "text", level, scale, margin, text)
                    if txt:
                        bm = text_bitmap(txt, modules, margin)
                        if bm and margin > 0:
                            pgm = txt + ".pgm"
                            write_pgm(pgm, bm, 4)
                            check_decodes("text %s margin %d" % (level, margin), pgm, text)
                        checks += 1
                    zpl, _ = render(tool, tmp, "zpl", level, scale, margin, text)
                    if zpl:
                        with open(zpl) as f:
                            z = f.read()
                        m = re.fullmatch(r"\^XA\n\^CI28\n\^FO(\d+),(\d+)\^BQN,2,(\d+)"
                                         r"\^FD([LMQH])A,([^^]*)\^FS\n\^XZ\n", z)
                        if not m:
                            fail("zpl structure: %r" % z)
                        elif (m.group(4), m.group(5), int(m.group(3))) != (level, text, scale):
                            fail("zpl fields: %r" % (m.groups(),))
                        elif int(m.group(1)) != margin * scale:
                            fail("zpl origin %s" % m.group(1))
                        checks += 1
        # A manufacturer template is 8-bit data, not alphanumeric: still decodes.
        url = "https://example.com/d/0123D345666E2DBD?t=0123abcd"
        png, _ = render(tool, tmp, "png", "M", 4, 4, url)
        if png:
            check_decodes("png url", png, url)
            checks += 1
    print("%d checks, %d failed" % (checks, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
