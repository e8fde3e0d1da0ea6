"""Figures: report order and labels, the README's figures in sync with the code that draws them, imports downward only."""
import ast
import importlib.util
import json
from pathlib import Path

from w2s_nb.figures import ordered_models, short_label
from w2s_nb.report import make_report

from test_report import make_fixture_run

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"


def _readme_figures():
    "benchmarks/readme_figures.py as a module (benchmarks/ is not a package)."
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_order_and_labels():
    run = {"models": {"ceiling": dict(group="ceiling"), "m_pro_dpo": dict(group="stage2", method="dpo"),
                      "s1_r2_hybrid": dict(group="stage1", round=2, variant="hybrid"), "weak_icl": dict(group="weak_icl"),
                      "s1_r1_icl": dict(group="stage1", round=1, variant="icl"), "weak": dict(group="weak_floor"),
                      "s1_r1_hybrid": dict(group="stage1", round=1, variant="hybrid")}}
    names = [n for n, _ in ordered_models(run)]
    assert names == ["weak", "weak_icl", "s1_r1_icl", "s1_r1_hybrid", "s1_r2_hybrid", "m_pro_dpo", "ceiling"]
    assert [short_label(n, m) for n, m in ordered_models(run)][2:6] == ["S-I r1 icl", "S-I r1 hybrid", "S-I r2 hybrid", "S-II DPO"]

def test_readme_figures_are_what_the_code_draws(tmp_path):
    """docs/figures/*.svg are redrawn byte for byte from the committed docs/figures/source.json; when this fails the
    drawing code changed: run `python benchmarks/readme_figures.py runs/default` on the seed-0 default run and commit."""
    source = json.loads((FIGURES / "source.json").read_text(encoding="utf-8"))
    drawn = _readme_figures().draw(source, tmp_path)
    assert set(drawn) == {"accuracy.svg", "selection.svg"}
    for name, path in drawn.items():
        assert path.read_bytes() == (FIGURES / name).read_bytes(), (
            f"docs/figures/{name} is out of date with the drawing code: run "
            "`python benchmarks/readme_figures.py runs/default` (the seed-0 default run) and commit docs/figures/")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/figures/accuracy.svg)" in readme and "](docs/figures/selection.svg)" in readme


def test_readme_figures_source_holds_what_the_figures_draw(tmp_path):
    "Drawn from `figure_source` alone, the README's figures equal the run's own report/accuracy.svg and selection.svg."
    rf = _readme_figures()
    run = make_fixture_run(tmp_path / "run")
    report = make_report(run)
    drawn = rf.draw(json.loads(json.dumps(rf.figure_source(run))), tmp_path / "readme")
    for name in ("accuracy.svg", "selection.svg"):
        assert drawn[name].read_bytes() == report[name].read_bytes(), name


def _w2s_imports(path: Path) -> set[str]:
    "The w2s_nb modules a source file imports, at module level or inside functions."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = ("w2s_nb." + node.module) if node.level and node.module else node.module or ""
            if mod == "w2s_nb" or (node.level and not node.module):
                out |= {f"w2s_nb.{a.name}" for a in node.names}
            elif mod.startswith("w2s_nb."):
                out.add(mod)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("w2s_nb.")}
    return out


def test_figures_report_compare_import_downward_only():
    "figures <- report <- compare: no module imports one above it, not even inside a function."
    layers = ["w2s_nb.figures", "w2s_nb.report", "w2s_nb.compare"]
    for i, mod in enumerate(layers):
        imported = _w2s_imports(ROOT / "w2s_nb" / f"{mod.split('.')[1]}.py")
        assert not imported & set(layers[i:]), f"{mod} imports {sorted(imported & set(layers[i:]))}"
    assert "w2s_nb.figures" in _w2s_imports(ROOT / "w2s_nb" / "report.py")
    assert {"w2s_nb.figures", "w2s_nb.report"} <= _w2s_imports(ROOT / "w2s_nb" / "compare.py")
