"""The README's figures, from a finished run: the test accuracy and the Stage I selection of the embedded default.

    python benchmarks/readme_figures.py RUN_DIR [--out docs/figures]

Copies what the two figures draw from the run (`eval/metrics.json` without the per-difficulty and per-question detail,
`stage1/stage1_metrics.json`'s rounds) into `OUT/source.json`, then draws `OUT/accuracy.svg` and `OUT/selection.svg`
from that JSON with the package's own `plot_accuracy` / `plot_selection`, saved as the report saves them
(`save_figure`: no date, stable ids), so the same JSON always gives the same bytes — those of the run's
`report/accuracy.svg` and `report/selection.svg`. `tests/test_figures.py` redraws them from the committed
`source.json` and fails when they differ: after a change to the drawing code, rerun this script on the default run
(seed 0, `w2s run configs/default.yaml`, then `python benchmarks/readme_figures.py runs/default`) and commit the three
files.
"""
import argparse
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_KEYS = ("label", "group", "round", "variant", "method", "accuracy", "ci95", "pgr", "majority_n")
METRICS_KEYS = ("answer_format", "n_test", "weak_floor", "ceiling")
ROUND_KEYS = ("round", "n_questions", "selected", "selection_label_acc", "weak_label_acc", "icl_label_acc", "labellers")


def figure_source(run_dir) -> dict:
    "What the README's figures draw from a finished run: its name, the models' test metrics and the Stage I rounds."
    from w2s_nb.report import load_run
    run = load_run(run_dir)
    if not (run["stage1"] or {}).get("rounds"):
        raise SystemExit(f"{run_dir}: no Stage I rounds (stage1/stage1_metrics.json): run the whole pipeline first")
    m = run["metrics"]
    models = {n: {k: e[k] for k in MODEL_KEYS if k in e} for n, e in m["models"].items()}
    rounds = [{k: d[k] for k in ROUND_KEYS if k in d} for d in run["stage1"]["rounds"]]
    return dict(run=run["name"], metrics={**{k: m.get(k) for k in METRICS_KEYS}, "models": models},
                stage1=dict(rounds=rounds, d_weak_label_acc=run["stage1"].get("d_weak_label_acc")))


def draw(source: dict, out_dir) -> dict[str, Path]:
    """`accuracy.svg` and `selection.svg` of a `figure_source` in `out_dir`, saved the way the report saves them (so
    they equal the run's `report/accuracy.svg` and `report/selection.svg`); `{file name: path}`."""
    from w2s_nb.figures import plot_accuracy, plot_selection, save_figure
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {"accuracy": plot_accuracy(source["metrics"], source["run"]), "selection": plot_selection(source["stage1"])}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stem, fig in figs.items():
            svg = save_figure(fig, tmp, stem)[f"{stem}.svg"]  # PNG first, then SVG: the report's layout
            out[svg.name] = Path(shutil.copyfile(svg, out_dir / svg.name))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a finished run directory, e.g. runs/default")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="where source.json and the SVGs go")
    args = ap.parse_args(argv)
    source = figure_source(args.run_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "source.json").write_text(json.dumps(source, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for p in [out / "source.json", *draw(source, out).values()]:
        print(p)


if __name__ == "__main__":
    main()
