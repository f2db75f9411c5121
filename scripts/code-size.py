#!/usr/bin/env python3
"""Lines per Rust file and per function, for docs/architecture.md's size table.

    scripts/code-size.py [REV] [--top N]

reads the crates' sources at git revision REV (default: the working tree) and prints the
longest files and the longest functions (tests excluded: `tests/` folders and code after
`#[cfg(test)]`). A
function runs from its `fn` line to the closing brace at the same indentation, which is
how rustfmt lays code out.
"""
import argparse
import re
import subprocess
from pathlib import Path

FN = re.compile(r"^(\s*)(pub(\([^)]*\))? )?(const )?(async )?(unsafe )?fn (\w+)")


def sources(rev):
    if rev is None:
        return {str(p): p.read_text() for p in sorted(Path("crates").rglob("*.rs"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "crates"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], capture_output=True, text=True,
                              check=True).stdout for n in names if n.endswith(".rs")}


def functions(text):
    lines = text.split("\n")
    end = next((i for i, l in enumerate(lines) if l.strip() == "#[cfg(test)]"), len(lines))
    for i, line in enumerate(lines[:end]):
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        close = m.group(1) + "}"
        for j in range(i + 1, end):
            if lines[j] == close or lines[j].startswith(close + " "):
                yield m.group(7), j - i + 1
                break


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rev", nargs="?")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    files = {n: t for n, t in sources(args.rev).items() if "/tests/" not in n}
    sizes = sorted(((len(t.split("\n")), n) for n, t in files.items()), reverse=True)
    fns = sorted(((n, name, f) for f, t in files.items() for name, n in functions(t)),
                 reverse=True)
    total = sum(s for s, _ in sizes)
    print(f"{len(files)} files, {total} lines; {len(fns)} functions (tests left out)")
    print("longest files:")
    for s, n in sizes[:args.top]:
        print(f"  {s:5} {n}")
    print("longest functions:")
    for n, name, f in fns[:args.top]:
        print(f"  {n:5} {name} ({f})")


if __name__ == "__main__":
    main()
