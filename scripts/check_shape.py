#!/usr/bin/env python3
"""Checks the library's shape (issue: layers with no circles, functions that fit on a screen):

- no circle between the top-level modules of shared/src (`crate::x` paths, test code aside), so
  every import points down the layers README.md names;
- no function longer than 80 lines outside tests.

    python3 scripts/check_shape.py [shared/src] [-v]     # -v prints the module graph
    python3 scripts/check_shape.py --self-test            # shows it catches both
"""
import re
import sys
from pathlib import Path

ARGS = [a for a in sys.argv[1:] if not a.startswith("-")]
ROOT = Path(ARGS[0] if ARGS else "shared/src")
MAX_LINES = 80

# Names `lib.rs` re-exports at the crate root, and the module they live in.
REEXPORTS = {"Herald": "app", "Settings": "app"}


def top_module(path):
    rel = path.relative_to(ROOT).parts
    name = rel[0]
    return name[:-3] if name.endswith(".rs") else name

def code_lines(text):
    """Lines with comments and string contents blanked, so braces in them do not count."""
    res = []
    in_block = False
    for line in text.split("\n"):
        s = ""
        i = 0
        in_str = False
        while i < len(line):
            c = line[i]
            if in_block:
                if line.startswith("*/", i):
                    in_block = False; i += 2; continue
                i += 1; continue
            if in_str:
                if c == "\\": i += 2; continue
                if c == '"': in_str = False; s += '"'
                i += 1; continue
            if line.startswith("//", i): break
            if line.startswith("/*", i): in_block = True; i += 2; continue
            if c == '"' : in_str = True; s += '"'; i += 1; continue
            if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
                m = re.match(r"'(\\.|[^\\'])'", line[i:]); s += "' '"; i += len(m.group(0)); continue
            s += c; i += 1
        res.append(s)
    return res

def edges():
    g = {}
    for p in sorted(ROOT.rglob("*.rs")):
        if p.name in ("lib.rs",):
            continue
        src = top_module(p)
        text = "\n".join(code_lines(p.read_text()))
        text = cut_test_modules(text)
        for m in re.finditer(r"\bcrate::(\w+)", text):
            dst = REEXPORTS.get(m.group(1), m.group(1))
            if dst != src:
                g.setdefault(src, {}).setdefault(dst, set()).add(str(p))
        # `use crate::{a, b::c}` groups
        for m in re.finditer(r"\bcrate::\{([^}]*)\}", text, re.S):
            for part in re.findall(r"(?:^|,)\s*(\w+)", m.group(1)):
                part = REEXPORTS.get(part, part)
                if part != src:
                    g.setdefault(src, {}).setdefault(part, set()).add(str(p))
    return g

def cut_test_modules(text):
    lines = text.split("\n")
    out, skip, depth = [], False, 0
    for i, l in enumerate(lines):
        if not skip and re.match(r"\s*#\[cfg\(test\)\]", l):
            # the next item is test-only; skip it (a mod block or a single fn)
            skip = True; depth = 0; started = False
            out.append("")
            continue
        if skip:
            depth += l.count("{") - l.count("}")
            if "{" in l: started = True
            out.append("")
            if started and depth <= 0:
                skip = False
            elif not started and l.rstrip().endswith(";"):
                skip = False
            continue
        out.append(l)
    return "\n".join(out)

def cycles(g):
    found = []
    sys.setrecursionlimit(10000)
    # Tarjan SCC
    index, low, stack, on, res = {}, {}, [], set(), []
    counter = [0]
    def strong(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: res.append(sorted(comp))
    for v in list(g):
        if v not in index: strong(v)
    return res

def long_functions():
    bad = []
    for p in sorted(ROOT.rglob("*.rs")):
        lines = cut_test_modules("\n".join(code_lines(p.read_text()))).split("\n")
        i = 0
        while i < len(lines):
            l = lines[i]
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", l)
            if m:
                name = m.group(6)
                # find the opening brace of the body (or `;` for a declaration)
                j, depth, start = i, 0, None
                while j < len(lines):
                    if start is None:
                        k = lines[j]
                        if "{" in k:
                            start = j
                        elif k.rstrip().endswith(";") and "{" not in k:
                            break
                    if start is not None:
                        depth += lines[j].count("{") - lines[j].count("}")
                        if depth <= 0:
                            break
                    j += 1
                if start is not None:
                    n = j - i + 1
                    if n > MAX_LINES:
                        bad.append((str(p), i + 1, name, n))
                i = i + 1
                continue
            i += 1
    return bad

def self_test():
    """The check catches what it is for: a circle and a long function, and passes clean code."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a").mkdir()
        (root / "a" / "mod.rs").write_text("use crate::b::B;\npub struct A;\n")
        (root / "b.rs").write_text("pub struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n")
        run = lambda: subprocess.run([sys.executable, __file__, d], capture_output=True, text=True)
        assert run().returncode == 0, run().stdout
        (root / "b.rs").write_text("use crate::a::A;\npub fn long() {\n" + "    let _ = 1;\n" * 80 + "}\n")
        out = run()
        assert out.returncode == 1, out.stdout
        assert "circle between top-level modules: a , b" in out.stdout, out.stdout
        assert "fn long is 82 lines" in out.stdout, out.stdout
    print("check_shape self-test: ok")


def main():
    if "--self-test" in sys.argv:
        return self_test()
    g = edges()
    ok = True
    for comp in cycles(g):
        ok = False
        print("circle between top-level modules: " + " , ".join(comp))
        for a in comp:
            for b in comp:
                if b in g.get(a, {}):
                    print(f"  {a} -> {b}: " + ", ".join(sorted(g[a][b])[:4]))
    for f, line, name, n in long_functions():
        ok = False
        print(f"{f}:{line}: fn {name} is {n} lines (at most {MAX_LINES})")
    if "-v" in sys.argv:
        for a in sorted(g):
            print(a, "->", sorted(g[a]))
    sys.exit(0 if ok else 1)

main()
