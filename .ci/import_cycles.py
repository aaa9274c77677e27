#!/usr/bin/env python3
"""Fails on any import cycle between the modules of a Rust crate's `src/`,
and on a file held by `AppState` that names `AppState`.

    python3 .ci/import_cycles.py [SRC_DIR ...]   check (default: src crates/*/src)
    python3 .ci/import_cycles.py --self-test     plant cycles in a scratch tree; each must fail

Twice: between files, and between rooms (each top-level module of `src/`,
a file or a folder with everything under it; edges inside a room dropped),
so that a cycle through a folder's `mod.rs` is caught too.

A module is a file (`a/b.rs` or `a/b/mod.rs` is `crate::a::b`). It depends on
every module it names by path: `crate::`, `super::` and `self::` paths in
`use` items and in code, and bare paths from the `use`d names of a sibling
declared with `mod`. A module's items used by its own descendants are the
usual way down (a trait and the backends under it), so an edge from an
ancestor to a descendant is not counted; every other edge is, and any cycle
among them fails the check, printed file by file.

`AppState` (`state.rs`) holds parts that must not reach back to it: every
module whose type is a field of `AppState`'s inner struct is checked not to
name `AppState` (nor `crate::state`).
"""
import os
import re
import sys
import tempfile

PATH = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if rel == "main.rs" and os.path.exists(os.path.join(src, "lib.rs")):
                continue  # the binary beside a library is a crate of its own
            found[tuple(parts)] = rel
    return found


def strip(text):
    text = COMMENT.sub("", text)
    text = STRING.sub('""', text)
    # Tests inside a file (`#[cfg(test)] mod tests { .. }`) may use anything.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)
    return text[: cut.start()] if cut else text


def resolve(path, here, mods):
    """The module a path names (the longest known prefix), or None."""
    segments = path.split("::")
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    else:
        base = list(here)
        rest = segments
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not base:
                    return None
                base.pop()
            rest = rest[1:]
        base = tuple(base)
    full = base + tuple(rest)
    for n in range(len(full), -1, -1):
        if full[:n] in mods:
            return full[:n]
    return None


def edges(mods, src):
    graph = {m: set() for m in mods}
    for module, rel in mods.items():
        text = strip(open(os.path.join(src, rel), encoding="utf-8").read())
        paths = set(PATH.findall(text))
        for prefix, group in USE_GROUP.findall(text):
            for item in re.split(r"[,\s]+", group.replace("{", " ").replace("}", " ")):
                if item and item not in ("self",) and re.match(r"[A-Za-z_]", item):
                    paths.add(prefix + "::" + item.split("::")[0])
        for path in paths:
            target = resolve(path, module, mods)
            if target is None or target == module:
                continue
            if module == target[: len(module)]:
                continue  # an ancestor naming a descendant: the way down
            graph[module].add(target)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def state_parts(mods, src):
    """Modules whose types `AppState` holds: field types of `struct Inner`."""
    rel = mods.get(("state",))
    if rel is None:
        return []
    text = strip(open(os.path.join(src, rel), encoding="utf-8").read())
    body = re.search(r"struct\s+Inner\s*\{(.*?)\n\}", text, re.S)
    if not body:
        return []
    held = set()
    for path in PATH.findall(body.group(1)):
        target = resolve(path, ("state",), mods)
        if target and target != ("state",):
            held.add(target)
    for name in re.findall(r":\s*(?:Arc<)?([A-Z][A-Za-z0-9_]*)", body.group(1)):
        for prefix, group in USE_GROUP.findall(text):
            if re.search(rf"\b{name}\b", group):
                target = resolve(prefix, ("state",), mods)
                if target:
                    held.add(target)
        for m in re.findall(rf"\buse\s+((?:crate|super)(?:::\w+)*)::{name}\b", text):
            target = resolve(m, ("state",), mods)
            if target:
                held.add(target)
    return sorted(held)


def rooms(graph):
    """The graph folded to rooms: each top-level module (a file or folder
    under src/) with everything below it; edges inside a room dropped."""
    folded = {}
    for module, targets in graph.items():
        room = module[:1]
        folded.setdefault(room, set())
        for target in targets:
            if target[:1] != room and target[:1]:
                folded[room].add(target[:1])
    return folded


def check(src):
    mods = modules(src)
    graph = edges(mods, src)
    problems = []
    for component in cycles(graph):
        files = [mods[m] for m in component]
        problems.append(f"{src}: import cycle among {len(files)} files: " + ", ".join(files))
    for component in cycles(rooms(graph)):
        names = ["/".join(room) for room in component]
        problems.append(f"{src}: import cycle among {len(names)} rooms: " + ", ".join(names))
    for part in state_parts(mods, src):
        # The part's own folder, if it is one: every file under it.
        for module, rel in mods.items():
            if module[: len(part)] != part:
                continue
            text = strip(open(os.path.join(src, rel), encoding="utf-8").read())
            if re.search(r"\bAppState\b|crate::state\b", text):
                problems.append(f"{src}: {rel} is held by AppState and names it")
    return problems, len(mods), sum(len(v) for v in graph.values())


def self_test():
    cases = {
        "clean": ({"lib.rs": "pub mod a; pub mod b;", "a.rs": "use crate::b::B;", "b.rs": "pub struct B;"}, 0),
        "two files": ({"lib.rs": "pub mod a; pub mod b;", "a.rs": "use crate::b::B; pub struct A;",
                       "b.rs": "use crate::a::A; pub struct B;"}, 1),
        "three files, inline path": ({"lib.rs": "mod a; mod b; mod c;", "a.rs": "fn f() { crate::b::g() }",
                                      "b.rs": "use crate::c::{self, C};", "c.rs": "use super::a;"}, 1),
        "siblings by super": ({"lib.rs": "mod m;", "m/mod.rs": "mod x; mod y;", "m/x.rs": "use super::y::Y;",
                               "m/y.rs": "use super::x::X;"}, 1),
        "parent and child": ({"lib.rs": "mod m;", "m/mod.rs": "mod x; use x::X; pub trait T {}",
                              "m/x.rs": "use super::T; pub struct X;"}, 0),
        "rooms through a mod.rs": ({"lib.rs": "mod state; mod http;", "state.rs": "use crate::http::Router;",
                                    "http/mod.rs": "mod blobs; pub struct Router; fn r() { blobs::get() }",
                                    "http/blobs.rs": "use crate::state::AppState; pub fn get() {}"}, 1),
        "comment only": ({"lib.rs": "mod a; mod b;", "a.rs": "// crate::b::B\nuse crate::b::B;",
                          "b.rs": "/* crate::a */ pub struct B;"}, 0),
        "held by AppState": ({"lib.rs": "mod state; mod metrics;",
                              "state.rs": "use crate::metrics::Metrics;\npub struct AppState;\nstruct Inner {\n    metrics: Metrics,\n}",
                              "metrics.rs": "pub struct Metrics; fn f(_: &crate::state::AppState) {}"}, 2),
    }
    failed = False
    for name, (files, want) in cases.items():
        with tempfile.TemporaryDirectory() as root:
            for rel, text in files.items():
                path = os.path.join(root, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w").write(text)
            problems, _, _ = check(root)
            ok = len(problems) == 0 if want == 0 else len(problems) >= 1
            print(f"self-test {name}: {'ok' if ok else 'WRONG'} ({len(problems)} problem(s))")
            for p in problems:
                print("   ", p)
            failed |= not ok
    return 1 if failed else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    roots = argv[1:] or ["src"] + sorted(
        os.path.join("crates", c, "src") for c in os.listdir("crates") if os.path.isdir(os.path.join("crates", c, "src")))
    status = 0
    for src in roots:
        problems, count, edge_count = check(src)
        for p in problems:
            print(p)
        print(f"{src}: {count} modules, {edge_count} imports, {len([p for p in problems if 'cycle' in p])} cycles, "
              f"{len([p for p in problems if 'names it' in p])} parts of AppState naming it")
        status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
