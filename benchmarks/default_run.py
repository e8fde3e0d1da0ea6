"""Wall time and peak memory of the embedded default run, plus its headline numbers.

    python benchmarks/default_run.py [--seed 0] [--set KEY=VALUE ...] [--inline]

Runs `w2s run configs/default.yaml` in a subprocess (a fresh run directory `runs/bench-seed<S>`),
then prints wall time, peak RSS (the largest of the process tree: pipeline, kernels, workers) and
the test accuracies with 95% CIs and PGR, and checks the expected ordering
weak floor < full weak FT <= M_plus < M_pro <= ceiling. Goals: <= 10 minutes, <= 8 GiB.
"""
import argparse
import json
import resource
import shutil
import sys

from _w2s import ROOT, w2s_run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--inline", action="store_true", help="call stage functions in-process instead of papermill")
    ap.add_argument("--keep", action="store_true", help="reuse an existing run directory (measures a resumed run)")
    a = ap.parse_args()
    name = f"bench-seed{a.seed}" + ("-inline" if a.inline else "")
    run_dir = ROOT / "runs" / name
    if run_dir.exists() and not a.keep: shutil.rmtree(run_dir)
    rc, wall = w2s_run(name, [f"seed={a.seed}", *a.set], inline=a.inline)
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\nexit {rc}; wall time {wall / 60:.1f} min ({wall:.0f} s); peak RSS {peak_gib:.2f} GiB")
    if rc: sys.exit(rc)
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())["models"]
    for k, v in m.items():
        pgr = "" if v.get("pgr") is None else f"  PGR {v['pgr']:.2f}"
        print(f"{k:14s} {100 * v['accuracy']:5.1f}%  [{100 * v['ci95'][0]:.1f}, {100 * v['ci95'][1]:.1f}]{pgr}")
    acc = lambda k: m[k]["accuracy"]
    m_plus = json.loads((run_dir / "stage1" / "stage1_metrics.json").read_text())["m_plus"]
    best_pro = max((k for k in m if k.startswith("m_pro")), key=acc)
    checks = {"weak floor < full weak FT": acc("weak") < acc("full_weak"),
              f"full weak FT <= M_plus ({m_plus})": acc("full_weak") <= acc(m_plus),
              f"M_plus < M_pro ({best_pro})": acc(m_plus) < acc(best_pro),
              "M_pro <= ceiling": acc(best_pro) <= acc("ceiling"),
              "ceiling >= weak floor + 20 points": acc("ceiling") - acc("weak") >= 0.20,
              "PGR(M_pro) > 0.3": (m[best_pro].get("pgr") or 0) > 0.3,
              "wall <= 10 min": wall <= 600, "peak RSS <= 8 GiB": peak_gib <= 8}
    for k, ok in checks.items(): print(f"{'PASS' if ok else 'FAIL'}  {k}")


if __name__ == "__main__":
    main()
