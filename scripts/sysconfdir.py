#!/usr/bin/env python3
"""Write IN to OUT with /etc/tpad and /etc/tpas made SYSCONFDIR/tpad and SYSCONFDIR/tpas.

The sources (man pages, the encrypted-credentials drop-in) name the paths of an install
with sysconfdir /etc; the build installs them with the configured sysconfdir, the one the
programs' defaults and the units use."""

import re
import sys


def main():
    src, out, sysconfdir = sys.argv[1:4]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    sysconfdir = sysconfdir.rstrip("/") or "/"
    text = re.sub(r"(?<![\w/.-])/etc/(tpad|tpas)(?=[/\s\\\"'`),.:;]|$)",
                  lambda m: f"{sysconfdir}/{m.group(1)}", text, flags=re.M)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
