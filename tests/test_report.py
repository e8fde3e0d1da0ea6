"""Report: one run's figures and results.md from a fixture run directory (fake metrics, no models), the CLI, and papermill.
`make_fixture_run` and the PNG / SVG checks are shared with tests/test_figures.py, test_compare.py and test_pipeline.py."""
import json
from pathlib import Path

import matplotlib.image
import pytest

from w2s_nb.cli import main
from w2s_nb.eval import accuracy_by_difficulty
from w2s_nb.stats import wilson_interval
from w2s_nb.figures import plot_accuracy, plot_by_difficulty, save_figure
from w2s_nb.report import load_run, make_report, paired_tests

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_FILES = {f"{s}.{e}" for s in ("accuracy", "selection", "confidence", "losses", "difficulty") for e in ("png", "svg")} | {"results.md"}


def _write(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl": path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else: path.write_text(json.dumps(obj))


def make_fixture_run(root: Path, floor=0.25, ceiling=0.70, stages=True, n_test=200, rows=True, difficulty=True, seed=None) -> Path:
    """A run directory written straight from the run-directory layout (nbs/02_rundir.ipynb): models.json files with train logs,
    stage1/stage2 metrics, eval/metrics.json and (`rows`) the per-question rows eval/<name>.jsonl. Accuracies are made up; no
    model exists. A model with c correct answers gets questions offset..offset+c-1 right (offset 10 for s1_r1_hybrid, else 0),
    so paired counts are easy to work out by hand; question i has difficulty 1 + i % 4. `difficulty=False`: metrics as eval
    wrote them before by_difficulty existed. `seed`: config.yaml holds it (and the name cfg-seed<seed>), as a sweep's runs do."""
    models = [  # name, stage, group, round, variant, method, accuracy
        ("weak", "weak", "weak_floor", None, None, None, floor),
        ("weak_icl", None, "weak_icl", None, None, None, floor + 0.05),
        ("full_weak", "stage1", "full_weak", None, None, None, floor + 0.02),
        ("s1_r1_weak", "stage1", "stage1", 1, "weak", None, 0.40),
        ("s1_r1_hybrid", "stage1", "stage1", 1, "hybrid", None, 0.45),
        ("ceiling", "stage1", "ceiling", None, None, None, ceiling),
        ("m_pro_dpo", "stage2", "stage2", None, None, "dpo", 0.52),
        ("m_pro_simpo", "stage2", "stage2", None, None, "simpo", 0.50)]
    if not stages: models = [m for m in models if m[2] in ("weak_floor", "weak_icl")]
    ms, mj = {}, {"weak": {}, "stage1": {}, "stage2": {}}
    for name, stage, group, t, variant, method, acc in models:
        c = round(acc * n_test)
        p = None if name in ("weak", "ceiling") or not stages or ceiling <= floor else (c / n_test - floor) / (ceiling - floor)
        meta = dict(label=f"model {name}", group=group, round=t, variant=variant, method=method)
        ms[name] = dict(**meta, accuracy=c / n_test, correct=c, n=n_test, ci95=list(wilson_interval(c, n_test)),
                        pgr=p, pass_at_n=None, majority_n=1)
        offset = 10 if name == "s1_r1_hybrid" else 0
        result_rows = [dict(id=f"t{i:03d}", correct=offset <= i < offset + c) for i in range(n_test)]
        if rows: _write(root / "eval" / f"{name}.jsonl", result_rows)
        if difficulty: ms[name]["by_difficulty"] = accuracy_by_difficulty(result_rows, {f"t{i:03d}": 1 + i % 4 for i in range(n_test)})
        if stage is None or (not stages and stage != "weak"): continue
        mj[stage][name] = dict(ref=dict(base="/models/strong", adapters=[f"{stage}/{name}/adapter"], gguf_file=None),
                               role="weak" if name == "weak" else "strong", **meta)
        _write(root / stage / name / "train_log.jsonl",
               [dict(step=s, epoch=s / 10, loss=1.5 / s) for s in range(1, 11)] + [dict(step=10, train_loss=0.4)])
    if stages:
        mj["stage1"]["m_plus"] = {**mj["stage1"]["s1_r1_hybrid"], "label": "M_plus", "alias_of": "s1_r1_hybrid"}
        _write(root / "stage1" / "stage1_metrics.json", dict(rounds=[dict(
            round=1, n_questions=300, selected=120, selection_label_acc=0.85, weak_label_acc=0.4, icl_label_acc=0.45,
            labellers=["weak", "icl"])], d_weak_label_acc=0.4))
        _write(root / "stage2" / "stage2_metrics.json", dict(
            n_questions=300, n_samples=10, confidences=[(i % 10 + 1) / 10 for i in range(300)], tau=0.6, tau_high=0.8,
            kept=150, pairs=100, pairs_weak_chosen=60, pairs_weak_rejected=40, chosen_correct=0.8, rejected_wrong=0.9,
            skipped=dict(low_confidence=150, no_rejected=20, below_tau_high=30, empty_majority=0)))
    for stage, d in mj.items():
        if d: _write(root / stage / "models.json", d)
    _write(root / "eval" / "metrics.json", dict(answer_format="gsm8k", n_test=n_test, models=ms, weak_floor="weak",
                                                ceiling="ceiling" if "ceiling" in ms else None,
                                                **(dict(difficulty="gold solution lines") if difficulty else {})))
    seed_lines = f"name: cfg-seed{seed}\nseed: {seed}\n" if seed is not None else ""
    (root / "config.yaml").write_text(seed_lines + "weak:\n  path: /models/weak-1b\nstrong:\n  path: /models/strong\n")
    return root


def assert_valid_png(path: Path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, img.shape


def assert_valid_svg(path: Path):
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


def test_make_report_writes_every_figure_and_table(tmp_path):
    run = make_fixture_run(tmp_path / "run_a")
    written = make_report(run)
    assert set(written) == ALL_FILES
    assert all(p.parent == run / "report" and p.exists() for p in written.values())
    for name, p in written.items():
        if name.endswith(".png"): assert_valid_png(p)
        if name.endswith(".svg"): assert_valid_svg(p)
    md = written["results.md"].read_text()
    assert "| model s1_r1_hybrid | `s1_r1_hybrid` | stage1 | 45.0 |" in md
    assert "0.444" in md  # PGR of s1_r1_hybrid: (0.45 - 0.25) / (0.70 - 0.25)
    assert "| 1 | weak, icl | 300 | 120 | 85.0 | 40.0 | 45.0 |" in md
    assert "![accuracy](accuracy.png)" in md
    # redrawing an unchanged run gives the same SVG (no timestamps, stable ids)
    again = save_figure(plot_accuracy(load_run(run)["metrics"], "run_a"), tmp_path / "again", "accuracy")
    assert again["accuracy.svg"].read_bytes() != b"" and again["accuracy.svg"].read_bytes() == written["accuracy.svg"].read_bytes()



def test_report_of_a_partial_run_and_undefined_pgr(tmp_path):
    run = make_fixture_run(tmp_path / "early", floor=0.4, ceiling=0.3, stages=False)
    written = make_report(run, tmp_path / "elsewhere")
    assert set(written) == {"accuracy.png", "accuracy.svg", "losses.png", "losses.svg", "difficulty.png", "difficulty.svg", "results.md"}
    assert_valid_png(written["accuracy.png"])
    md = written["results.md"].read_text()
    assert "Undefined here:** no strong-ceiling accuracy" in md
    assert "## Stage I" not in md and "## Stage II" not in md
    assert "## Paired tests" not in md  # weak floor and weak-ICL only: no step of the method to test


def test_report_paired_tests_between_consecutive_stages(tmp_path):
    """Hand-worked counts: weak-ICL is right on questions 0-59, M_plus (s1_r1_hybrid) on 10-99, DPO on 0-103, SimPO on
    0-99, the ceiling on 0-139."""
    run = make_fixture_run(tmp_path / "run")
    steps = [(t["first_name"], t["second_name"], t["b"], t["c"]) for t in paired_tests(load_run(run))]
    assert steps == [("weak_icl", "s1_r1_hybrid", 10, 40), ("s1_r1_hybrid", "m_pro_dpo", 0, 14), ("s1_r1_hybrid", "m_pro_simpo", 0, 10),
                     ("m_pro_dpo", "ceiling", 0, 36), ("m_pro_simpo", "ceiling", 0, 40)]
    md = make_report(run)["results.md"].read_text()
    assert "| weak-ICL (`weak_icl`) | Stage I (M_plus) (`s1_r1_hybrid`) | 30.0 → 45.0 | 10 | 40 | 2.4e-05 |" in md
    assert "| Stage I (M_plus) (`s1_r1_hybrid`) | Stage II SIMPO (`m_pro_simpo`) | 45.0 → 50.0 | 0 | 10 | 0.002 |" in md
    assert md.index("## Paired tests") < md.index("## Accuracy by difficulty") < md.index("## Stage I selection")


def test_paired_tests_refuse_rows_of_different_questions(tmp_path):
    run = make_fixture_run(tmp_path / "run")
    _write(run / "eval" / "m_pro_dpo.jsonl", [dict(id=f"t{i:03d}", correct=True) for i in range(199)])
    with pytest.raises(ValueError, match=r"eval/s1_r1_hybrid.jsonl vs eval/m_pro_dpo.jsonl: a paired test needs the same questions: "
                                         r"1 id\(s\) only in the first model's rows \(e.g. 't199'\)"):
        make_report(run)


def test_report_accuracy_by_difficulty_table_and_figure(tmp_path):
    run = make_fixture_run(tmp_path / "run")
    written = make_report(run)
    assert_valid_png(written["difficulty.png"]); assert_valid_svg(written["difficulty.svg"])
    md = written["results.md"].read_text()
    assert "| model \\ gold solution lines | 1 (n = 50) | 2 (n = 50) | 3 (n = 50) | 4 (n = 50) |" in md
    # M_plus is right on questions 10-99: 22, 22, 23, 23 of the 50 at each difficulty
    assert "| S-I r1 hybrid | 44.0 (31.2–57.7) | 44.0 (31.2–57.7) | 46.0 (33.0–59.6) | 46.0 (33.0–59.6) |" in md
    assert "| weak-ICL | 30.0 (19.1–43.8) | 30.0 (19.1–43.8) | 30.0 (19.1–43.8) | 30.0 (19.1–43.8) |" in md
    fig = plot_by_difficulty(load_run(run))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "weak floor", "weak-ICL", "full weak FT", "Stage I (M_plus)", "Stage II DPO", "Stage II SIMPO", "strong ceiling"]


def test_report_of_a_run_evaluated_before_difficulty_and_without_rows(tmp_path):
    """eval/metrics.json without by_difficulty (runs written before it existed): no difficulty table or figure, no error;
    without eval/<name>.jsonl rows there are no paired tests either."""
    old = make_fixture_run(tmp_path / "old", difficulty=False)
    written = make_report(old)
    assert set(written) == ALL_FILES - {"difficulty.png", "difficulty.svg"}
    md = written["results.md"].read_text()
    assert "## Accuracy by difficulty" not in md and "## Paired tests between consecutive stages" in md
    bare = make_fixture_run(tmp_path / "bare", difficulty=False, rows=False)
    md = make_report(bare)["results.md"].read_text()
    assert "## Accuracy by difficulty" not in md and "## Paired tests" not in md and "| model s1_r1_hybrid |" in md


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="run the eval stage first"):
        make_report(tmp_path / "empty")



def test_cli_report_one_and_several_runs(tmp_path, capsys):
    a, b = make_fixture_run(tmp_path / "a"), make_fixture_run(tmp_path / "b", floor=0.3)
    assert main(["report", str(a)]) == 0
    assert set(p.name for p in (a / "report").iterdir()) == ALL_FILES
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.md").exists()
    assert_valid_png(tmp_path / "cmp" / "compare.png")
    assert main(["report", str(a), str(b)]) == 0  # default: compare/ beside the first run, not inside it
    assert (tmp_path / "compare" / "compare.png").exists() and not (a / "report" / "compare").exists()
    assert str(tmp_path / "compare" / "compare.md") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_report_stage_notebook_runs_under_papermill(tmp_path):
    import nbformat
    import papermill as pm
    src = ROOT / "nbs" / "stages" / "05_report.ipynb"
    nb = nbformat.read(src, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), (
        f"{src} has no cell tagged 'parameters': nbdev_clean strips cell tags unless settings.ini "
        "has `allowed_cell_metadata_keys = tags`")
    a = make_fixture_run(tmp_path / "a")
    pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters=dict(run_dir=str(a), config_file=None),
                        kernel_name="python3", progress_bar=False, cwd=str(src.parent))
    assert set(p.name for p in (a / "report").iterdir() if p.is_file()) == ALL_FILES
    for f in ("accuracy.png", "selection.png", "confidence.png", "losses.png"):
        assert_valid_png(a / "report" / f)
