"""The package's modules import in one direction: the graph of `w2s_nb` imports, read from the sources with the ones
inside functions included, has no cycle."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "w2s_nb"


def imports_of(path: Path) -> set[str]:
    "The `w2s_nb` modules a source file imports anywhere (module level or inside functions)."
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if n.level == 1: out |= {mod.split(".")[0]} if mod else {a.name for a in n.names}
            elif mod == "w2s_nb": out |= {a.name for a in n.names}
            elif mod.startswith("w2s_nb."): out.add(mod.split(".")[1])
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("w2s_nb.")}
    return out


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    mods = {p.stem for p in pkg.glob("*.py") if p.stem not in ("__init__", "_modidx")}
    return {m: (imports_of(pkg / f"{m}.py") & mods) - {m} for m in sorted(mods)}


def find_cycle(graph: dict[str, set[str]]):
    "One cycle as a list of modules (first == last), or None."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open": return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)): return c
        state[m] = "done"; stack.pop()
        return None
    for m in graph:
        if m not in state and (c := visit(m)): return c
    return None


def test_the_cycle_finder_finds_cycles_inside_functions(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from w2s_nb.c import y\n")
    (tmp_path / "c.py").write_text("import os\ndef g():\n    from w2s_nb import a\n")
    assert find_cycle(import_graph(tmp_path)) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(tmp_path)) is None


def test_no_import_cycle_between_package_modules():
    graph = import_graph()
    assert {"files", "config", "rundir", "world", "models"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert graph["files"] == set(), "files is the bottom layer: it imports nothing from w2s_nb"


def notebook_order(nbs: Path = PKG.parent / "nbs") -> dict[str, int]:
    "Each exported module's notebook number (`07_models.ipynb` -> models: 7), read from its `default_exp` line."
    import json, re
    out = {}
    for nb in nbs.glob("[0-9][0-9]_*.ipynb"):
        src = "".join(s for c in json.loads(nb.read_text())["cells"] for s in c["source"] if "default_exp" in s)
        if m := re.search(r"#\| *default_exp +(\w+)", src): out[m.group(1)] = int(nb.name[:2])
    return out


def test_modules_import_only_from_notebooks_before_them():
    """Data-flow order: a module imports only modules whose notebooks come earlier, so a reader of `nbs/` in order never
    meets a name defined further on (stronger than no cycle); `trainable` sits between `models` and `train`, the probes
    that read gold after every stage."""
    order, graph = notebook_order(), import_graph()
    assert set(order) == set(graph), f"modules without a numbered notebook: {set(graph) ^ set(order)}"
    upward = sorted((m, d) for m, deps in graph.items() for d in deps if order[d] >= order[m])
    assert upward == [], f"imports of later notebooks' modules: {upward}"
    assert order["models"] < order["trainable"] < order["train"] and order["stage2"] < order["probes"]
    assert not any("probes" in deps for m, deps in graph.items()), "no package module uses the probes"
