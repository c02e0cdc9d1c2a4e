#!/usr/bin/env python3
"""Fails if the modules of src/ import each other in a circle.

A module's dependencies are the `crate::...`, `super::...` and `self::...` paths
its code names (use lines and paths written inline; comments and inline test
modules are left out), each resolved to the longest module prefix that exists.
Prints every circle (a strongly connected group of two or more modules) and exits
1 if there is one.   Usage: module_cycles.py [SRC_DIR]
"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts.pop()
    return "::".join(parts)


modules = {module_name(p): p for p in src.rglob("*.rs")}
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")


def code_of(text: str) -> str:
    # Drop line comments and everything from the first `#[cfg(test)]` module on.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+", text, maxsplit=1)[0]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def target(current: str, root: str, rest: list) -> str | None:
    base = [] if not current else current.split("::")
    if root == "crate":
        base = []
    elif root == "super":
        base = base[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    for end in range(len(rest), 0, -1):
        name = "::".join(base + rest[:end])
        if name in modules:
            return name
    return None


edges = {m: set() for m in modules}
for name, path in modules.items():
    for root, tail in PATH.findall(code_of(path.read_text())):
        dep = target(name, root, tail.strip(":").split("::"))
        # The crate root and a parent declare and re-export their children: using a
        # child is not a dependency that could close a circle through it.
        if dep is None or dep == name or not name or dep.startswith(name + "::"):
            continue
        edges[name].add(dep)

# Tarjan's strongly connected components.
index, low, stack, on_stack, groups = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            group.append(w)
            if w == v:
                break
        if len(group) > 1:
            groups.append(sorted(group))


sys.setrecursionlimit(10_000)
for v in sorted(modules):
    if v not in index:
        visit(v)
for group in groups:
    print("import cycle: " + " -> ".join(group))
print(f"module cycles: {len(groups)} among {len(modules)} modules")
sys.exit(1 if groups else 0)
