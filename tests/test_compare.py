"""Compare: several runs in one table and figure, and the runs of a seed sweep (mean ± sd, pooled paired tests)."""
from w2s_nb.cli import main
from w2s_nb.compare import compare_runs, is_seed_sweep, plot_comparison, seed_summary
from w2s_nb.report import load_run

from test_report import assert_valid_png, assert_valid_svg, make_fixture_run


def test_compare_runs_table_and_figure(tmp_path):
    runs = [make_fixture_run(tmp_path / "gemma", floor=0.25), make_fixture_run(tmp_path / "llama", floor=0.30),
            make_fixture_run(tmp_path / "bad", floor=0.5, ceiling=0.45)]
    written = compare_runs(runs, tmp_path / "cmp")
    assert set(written) == {"compare.png", "compare.svg", "compare.md"}
    assert_valid_png(written["compare.png"]); assert_valid_svg(written["compare.svg"])
    lines = written["compare.md"].read_text().splitlines()
    header = next(l for l in lines if l.startswith("| run |"))
    assert header == ("| run | n test | weak floor | weak-ICL | full weak FT | Stage I (M_plus) | Stage II DPO | "
                      "Stage II SIMPO | strong ceiling |")
    rows = [l for l in lines if l.startswith("| gemma") or l.startswith("| llama") or l.startswith("| bad")]
    assert len(rows) == 3
    assert rows[0].startswith("| gemma (weak: weak-1b) | 200 | 25.0 | 30.0 (0.11) | 27.0 (0.04) | 45.0 (0.44) |")
    assert "bad (weak: weak-1b): PGR undefined" in written["compare.md"].read_text()

def test_comparison_labels_stay_inside_the_axes_near_100_percent(tmp_path):
    runs = [load_run(make_fixture_run(tmp_path / n, floor=0.3)) for n in ("a", "b")]
    for r in runs:  # a near-perfect world: every accuracy and CI close to 100%
        for m in r["metrics"]["models"].values(): m["accuracy"], m["ci95"] = 0.985, [0.97, 0.995]
    fig = plot_comparison(runs)
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_text()]
    assert labels and all(t.get_position()[1] < ax.get_ylim()[1] for t in labels)
    title = ax.title.get_window_extent()
    assert not any(t.get_window_extent().overlaps(title) for t in labels)

def test_runs_of_one_config_with_different_seeds_get_the_across_seeds_report(tmp_path, capsys):
    runs = [make_fixture_run(tmp_path / f"cfg-seed{s}", floor=f, seed=s) for s, f in ((0, 0.25), (1, 0.30), (2, 0.20))]
    assert main(["report", *map(str, runs)]) == 0
    out = tmp_path / "compare"
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.png", "compare.svg", "seeds.md", "seeds.png", "seeds.svg"}
    assert_valid_png(out / "seeds.png"); assert_valid_svg(out / "seeds.svg")
    md = (out / "seeds.md").read_text()
    assert md.startswith("# Across seeds: cfg\n")
    assert "| weak floor | 3 | 25.0 ± 5.0 | 20.0 to 30.0 | – | – | 0: 25.0, 1: 30.0, 2: 20.0 |" in md
    # PGR of weak-ICL: 0.05/0.45, 0.05/0.40, 0.05/0.50 -> mean 0.112, sd 0.0125
    assert "| weak-ICL | 3 | 30.0 ± 5.0 | 25.0 to 35.0 | 0.112 ± 0.013 | 0.100 to 0.125 | 0: 30.0, 1: 35.0, 2: 25.0 |" in md
    assert "| Stage I (M_plus) | 3 | 45.0 ± 0.0 | 45.0 to 45.0 | 0.440 ± 0.063 | 0.375 to 0.500 |" in md
    # weak-ICL right on 0..59 / 0..69 / 0..49, M_plus on 10..99: b = 10 each, c = 40 + 30 + 50, exact test on (30, 120)
    assert "| weak-ICL | Stage I (M_plus) | 30 | 120 | 6.0e-14 | 0: 10 / 40, 1: 10 / 30, 2: 10 / 50 |" in md
    assert "| Stage I (M_plus) | Stage II DPO | 0 | 42 |" in md
    assert "[seeds.md](seeds.md)" in (out / "compare.md").read_text()
    assert str(out / "seeds.md") in capsys.readouterr().out
    s = {r["column"]: r for r in seed_summary([load_run(r) for r in runs])}
    assert s["ceiling"]["accuracy"] == [0.7, 0.7, 0.7] and s["ceiling"]["accuracy_spread"]["sd"] == 0.0

def test_seed_sweep_detection(tmp_path):
    a, b = load_run(make_fixture_run(tmp_path / "a", seed=0)), load_run(make_fixture_run(tmp_path / "b", seed=1))
    assert is_seed_sweep([a, b]) and not is_seed_sweep([a])
    assert not is_seed_sweep([a, load_run(make_fixture_run(tmp_path / "a2", seed=0))])      # the same seed twice
    assert not is_seed_sweep([a, load_run(make_fixture_run(tmp_path / "n", floor=0.3))])    # no seed in the config
    other = make_fixture_run(tmp_path / "other", seed=2)
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("weak-1b", "weak-7b"))
    assert not is_seed_sweep([a, b, load_run(other)])                                       # another weak model
    written = compare_runs([tmp_path / "a", other], tmp_path / "cmp")
    assert "seeds.md" not in written
