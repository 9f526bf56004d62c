#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-ordering: every memory-ordering edge in the C sources is labelled,
on both of its sides.

Each edge is listed once in the table of docs/design.md (a row whose first
cell is "R<n>/A<n>", with A<n>' sides if any, or "F<n>"); a label used in
the sources that the table does not list, or a row no source uses, is a
finding.

An atomic operation stronger than relaxed (the named operations of
lib/atomic.h: load_acquire*, store_release*, cas_*, xchg_seqcst*,
*_seqcst*, fence_*) must carry, in the comment just above it (or on its
line), either a label or the words "no edge" saying why it needs no pair.

Labels name edges: R<n> on a release side, A<n> on an acquire side (A<n>'
for a second acquire side of the same edge), F<n> on each of a pair of
seq_cst fences (or of an asymmetric pair: a compiler barrier against
membarrier(2)).  Every R<n> must have an A<n> somewhere, every A<n> an
R<n>, and every F<n> must appear at two operations at least.  The edges
and what they carry are listed in docs/design.md.

Usage: check-ordering.py [--table FILE] [FILE...]
  (default: --table docs/design.md, lib/*.c lib/*.h daemon/*.c)
Exit status 0 when every check passes, 1 otherwise (each finding printed
as file:line: message), 2 on a usage error.
"""
import glob
import re
import sys

STRONG = re.compile(
    r"\b(load_acquire\w*|store_release\w*|cas_\w+|xchg_seqcst\w*|"
    r"\w+_seqcst\w*|fence_(?:acquire|release|seqcst))\s*\(")
# The light and the heavy side of an asymmetric fence (a compiler barrier
# against membarrier(2)): they may carry an F label, and need not.
ASYMMETRIC = re.compile(r"\bfence_compiler\s*\(|\bMEMBARRIER_CMD_\w+")
DEFINITION = re.compile(r"^\s*static\s+inline\b|^#\s*define\b")
LABEL = re.compile(r"(?<![A-Za-z0-9_])([RAF])(\d+)('?)(?![A-Za-z0-9_])")
NO_EDGE = re.compile(r"no (?:data )?edge", re.IGNORECASE)
# How far above an operation its comment may start (lines).
REACH = 14


def comment_text(lines, i):
    """The operation's own line and the comment and code just above it,
    up to a blank line or REACH lines."""
    text = [lines[i]]
    j = i - 1
    while j >= 0 and i - j <= REACH and lines[j].strip():
        text.append(lines[j])
        if lines[j].strip().startswith("/*") or \
                lines[j].rstrip().endswith("{"):
            break
        j -= 1
    return "\n".join(reversed(text))


TABLE_ROW = re.compile(r"^\|\s*([RAF0-9/,' ]+?)\s*\|")


def table_edges(path):
    """The edges docs/design.md lists: {(kind, n)}."""
    edges = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = TABLE_ROW.match(line)
            if not m:
                continue
            for kind, n, _ in LABEL.findall(m[1]):
                edges.add((kind, int(n)))
    return edges


def check(paths, table=None):
    findings = []
    sides = {}          # (kind, n) -> [file:line]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except OSError as e:
            print(f"check-ordering: {path}: {e.strerror}", file=sys.stderr)
            sys.exit(2)
        for i, line in enumerate(lines):
            code = line.split("/*")[0].split("//")[0]
            if DEFINITION.search(line):
                continue
            if not STRONG.search(code):
                if ASYMMETRIC.search(code):
                    for m in LABEL.finditer(comment_text(lines, i)):
                        if m[1] == "F":
                            sides.setdefault(("F", int(m[2])), []).append(
                                f"{path}:{i + 1}")
                continue
            near = comment_text(lines, i)
            # An operation's own labels; "pairs with A1" names the other
            # side, which must be labelled where it is.
            labels = [m.groups() for m in LABEL.finditer(near)
                      if not re.search(r"with\s+(?:\S+\s+)?$",
                                       near[max(0, m.start() - 16):
                                            m.start()])]
            if not labels and not NO_EDGE.search(near):
                findings.append(f"{path}:{i + 1}: {STRONG.search(code)[1]}"
                                " without a label or a 'no edge' comment")
            for kind, n, _ in labels:
                sides.setdefault((kind, int(n)), []).append(
                    f"{path}:{i + 1}")
    for (kind, n), where in sorted(sides.items()):
        if kind == "R" and ("A", n) not in sides:
            findings.append(f"{where[0]}: R{n} has no acquire side (A{n})")
        elif kind == "A" and ("R", n) not in sides:
            findings.append(f"{where[0]}: A{n} has no release side (R{n})")
        elif kind == "F" and len(set(where)) < 2:
            findings.append(f"{where[0]}: F{n} is on one fence only")
    if table is not None:
        listed = table_edges(table)
        for (kind, n), where in sorted(sides.items()):
            if (kind, n) not in listed:
                findings.append(f"{where[0]}: {kind}{n} is not in the "
                                f"table of edges in {table}")
        for kind, n in sorted(listed - set(sides)):
            findings.append(f"{table}: {kind}{n} is listed but no source "
                            "uses it")
    return findings


def main(argv):
    table = "docs/design.md"
    if argv[:1] == ["--table"] and len(argv) >= 2:
        table, argv = argv[1], argv[2:]
    if any(a.startswith("-") for a in argv):
        print(__doc__.split("\n\n")[-2], file=sys.stderr)
        return 2
    paths = argv or sorted(glob.glob("lib/*.c") + glob.glob("lib/*.h") +
                           glob.glob("daemon/*.c"))
    try:
        findings = check(paths, table)
    except OSError as e:
        print(f"check-ordering: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    for f in findings:
        print(f)
    if findings:
        print(f"check-ordering: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
