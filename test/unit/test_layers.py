#!/usr/bin/env python3
"""The tree's layering, as README's layout table states it, checked from the #include lines.

- proto/ and core/ are shared: they include no header of daemon/, tpas/ or client/.
- daemon/ (tpad), tpas/ and client/ (tpactl, libtpad-client) include nothing of each other.
- No module depends on itself through others. A module is a .c and its .h; a header
  without a .c of its own (store_backend.h, store_sync.h, print_backend.h) is the inner
  face of the module its name starts with.

Usage: test_layers.py SRC_ROOT
"""

import os
import re
import sys

DIRS = ["proto", "core", "daemon", "tpas", "client", "client/lib"]
SHARED = {"proto", "core"}
PROGRAMS = {"daemon", "tpas", "client"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources(root):
    ret = {}
    for d in DIRS:
        for name in os.listdir(os.path.join(root, d)):
            if name.endswith((".c", ".h")):
                with open(os.path.join(root, d, name), encoding="utf-8") as f:
                    ret[f"{d}/{name}"] = f.read()
    return ret


def resolve(files, src, header):
    """The file an #include "header" in src names: its own folder first, as the compiler."""
    own = os.path.join(os.path.dirname(src), header)
    if own in files:
        return own
    hits = [p for p in files if os.path.basename(p) == os.path.basename(header)]
    return hits[0] if len(hits) == 1 else None


def module(files, path):
    stem = path[:-2]
    if stem + ".c" in files:
        return stem
    # A header without a .c: the module whose name is the longest prefix of it.
    folder, base = os.path.split(stem)
    best = None
    for p in files:
        if p.endswith(".c") and os.path.dirname(p) == folder:
            m = os.path.basename(p)[:-2]
            if base.startswith(m + "_") and (best is None or len(m) > len(best)):
                best = m
    return f"{folder}/{best}" if best else stem


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(files):
    problems, graph = [], {}
    for src, text in sorted(files.items()):
        top = src.split("/")[0]
        for header in INCLUDE.findall(text):
            dst = resolve(files, src, header)
            if dst is None:
                continue  # generated (tpad-build.h, iface-data.h) or outside the tree
            to = dst.split("/")[0]
            if top in SHARED and to not in SHARED:
                problems.append(f"{src} (shared) includes {dst} (one program's)")
            if top in PROGRAMS and to != top and to not in SHARED:
                problems.append(f"{src} ({top}) includes {dst} ({to})")
            a, b = module(files, src), module(files, dst)
            if a != b:
                graph.setdefault(a, set()).add(b)
    for comp in cycles(graph):
        problems.append("modules that include each other: " + " -> ".join(comp))
    return problems


def self_test():
    """The checker finds what it looks for: a cycle and a shared file reaching up."""
    files = {"core/a.c": '#include "a.h"\n#include "b.h"\n', "core/a.h": "",
             "core/b.c": '#include "b.h"\n#include "a.h"\n', "core/b.h": "",
             "daemon/x.h": "", "core/c.c": '#include "x.h"\n',
             "daemon/s.c": '#include "s_inner.h"\n', "daemon/s_inner.h": '#include "s.h"\n',
             "daemon/s.h": ""}
    found = check(files)
    assert any("core/a -> core/b" in p for p in found), found
    assert any("core/c.c (shared) includes daemon/x.h" in p for p in found), found
    assert not any("daemon/s" in p for p in found), found


def main():
    self_test()
    problems = check(sources(sys.argv[1]))
    for p in problems:
        print(p)
    print(f"{len(problems)} layering problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
