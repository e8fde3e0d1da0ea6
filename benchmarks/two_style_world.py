"""Issue 31's candidate world: worked solutions in two styles, a compact one-line chain and the stepwise one.

    python benchmarks/two_style_world.py --p-compact 0.7 [--out runs/two-style] [--skip-run]

The shipped world's solutions have one path (`render_solution(..., "gsm")`: one operation per line), so M_plus's
samples disagree only by slips and its majority vote never beats its greedy answer (`nbs/04_world.ipynb`, last
section). This candidate gives every worked solution, in the pretraining corpus and in the data files (`D_gold,1`
included), a second way with probability `--p-compact`: the opening restated, then the whole chain on one line
(`Mia has 5 apples, so she has 5 + 3 - 2 = 6 apples.`), which a small model computes less reliably than one step per
line. If the compact way is the favourite, greedy decoding follows it and slips, samples spread over both ways, and the
stepwise samples' agreeing answers can outvote the compact ones' scattered mistakes: the precondition issue 31 asks
for (M_plus's majority of 10 at least 3 points above greedy on seed 0).

The style of a problem is fixed by a hash of its question, so a problem is always solved the same way. The package
is not changed: this script swaps `w2s_nb.world.render_solution` in its own process to build the two models (same
sizes and pretraining budgets as the shipped world) and the world's GSM8K-format data files into `--out`, then runs
`configs/default.yaml` on them (`weak.path`, `strong.path`, `data.path`, `data.test_path`) and measures the
precondition with `benchmarks/majority_vs_greedy.py`. About 11 minutes on 2 cores (build 4, run 5, probe 2);
`nbs/04_world.ipynb`, last section, has the figures for `--p-compact` 0.5 and 0.7.
"""
import argparse
import json
import subprocess
import sys
import zlib
from pathlib import Path

import w2s_nb.world as W

from _w2s import ROOT, w2s_run

STEPWISE = W.render_solution  # the shipped renderer


def compact(prob: dict) -> str:
    "The whole chain on one line after the restated opening: `Mia has 5 apples, so she has 5 + 3 - 2 = 6 apples.`"
    (s0, p, k, op0, m, x0), rest = prob["lines"][0], prob["lines"][1:]
    chain = (f"{k} * {m}" if op0 == "*" else str(x0)) + "".join(f" {op} {b}" for _, _, _, op, b, _ in rest)
    return f"{s0}, so {p} has {chain} = {prob['answer']} {prob['item']}."


def two_style_renderer(p_compact: float):
    "`render_solution` whose worked (`gsm`) solutions are compact for a `p_compact` share of questions (by hash)."
    def render(prob: dict, style: str = "gsm") -> str:
        if style == "gsm" and zlib.crc32(prob["question"].encode()) % 1000 < p_compact * 1000: return compact(prob)
        return STEPWISE(prob, style)
    return render


def build(out: Path, p_compact: float) -> dict:
    "Both models and the data files of the candidate world in `out` (skipped where already built)."
    W.render_solution = two_style_renderer(p_compact)
    models = W.build_world(out)
    data = W.world_data_paths(out)
    return dict(models={r: m["path"] for r, m in models.items()}, data={k: str(v) for k, v in data.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p-compact", type=float, required=True, help="share of worked solutions in the compact style")
    ap.add_argument("--out", default=None, help="where the world goes (default: runs/two-style-<p>)")
    ap.add_argument("--skip-run", action="store_true", help="only build the world")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE overrides for the run")
    a = ap.parse_args()
    if not 0 <= a.p_compact <= 1: ap.error(f"--p-compact {a.p_compact}: expected 0 to 1")
    tag = f"two-style-{a.p_compact:g}"
    out = Path(a.out or ROOT / "runs" / f"{tag}-world")
    world = build(out, a.p_compact)
    print(json.dumps(world, indent=1))
    if a.skip_run: return
    sets = [f"weak.path={world['models']['weak']}", f"strong.path={world['models']['strong']}",
            f"data.path={world['data']['train']}", f"data.test_path={world['data']['test']}", *a.set]
    rc, secs = w2s_run(tag, sets)
    if rc: raise SystemExit(f"w2s run failed ({rc}) after {secs:.0f} s")
    probe = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "majority_vs_greedy.py"), str(ROOT / "runs" / tag)],
                           capture_output=True, text=True, check=True)
    print(probe.stdout)


if __name__ == "__main__":
    main()
