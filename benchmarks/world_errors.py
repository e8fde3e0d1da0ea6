"""What kind of mistake each model of a finished *world* run makes, and how many wrong labels Stage I keeps.

    python benchmarks/world_errors.py RUN_DIR [RUN_DIR ...]

The embedded world's solutions write one equation `a op b = c` per step. For every wrong test answer of every
evaluated model this compares the solution's equations with the gold solution's and names the first difference:
`operand` (a number read wrongly from the question or carried wrongly), `operation` (the wrong one of + - *),
`arithmetic` (right numbers and operation, wrong result), `no answer` (nothing extracted) or `other`. It also
prints, per Stage I round, how many `D_gold,2` questions the filter kept and how many of those share a wrong
answer (gold labels used for this diagnosis only). `nbs/07_world.ipynb` quotes these figures. World runs only:
the equation format is the world's.
"""
import argparse
import json
import re
from collections import Counter
from pathlib import Path

from w2s_nb.answers import is_equiv
from w2s_nb.rundir import RunDir, read_jsonl

EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def error_kind(gold_solution: str, prediction: str, extracted: str) -> str:
    "The first way `prediction`'s equations differ from `gold_solution`'s."
    if not extracted: return "no answer"
    gold, pred = EQUATION.findall(gold_solution), EQUATION.findall(prediction)
    first = next(((g, p) for g, p in zip(gold, pred) if g != p), None)
    if first is None: return "other"
    g, p = first
    if g[:3] == p[:3]: return "arithmetic"
    return "operation" if g[1] != p[1] else "operand"


def run_errors(run_dir) -> dict:
    "Error kinds per evaluated model, and Stage I's kept / kept-but-wrong counts per round."
    rd = RunDir(Path(run_dir))
    test = {r["id"]: r for r in read_jsonl(rd.path("data", "test.jsonl"))}
    gold2 = {r["id"]: r["answer"] for r in read_jsonl(rd.path("data", "gold2_gold.jsonl"))}
    models = {}
    for f in sorted(rd.path("eval").glob("*.jsonl")):
        rows = read_jsonl(f)
        kinds = Counter(error_kind(test[r["id"]]["solution"], r["prediction"], r["extracted"]) for r in rows if not r["correct"])
        models[f.stem] = dict(questions=len(rows), wrong=sum(kinds.values()), **dict(kinds.most_common()))
    rounds = {}
    for sel in sorted(rd.path("stage1").glob("round*/selection.jsonl")):
        kept = [r for r in read_jsonl(sel) if r["agree"]]
        rounds[sel.parent.name] = dict(kept=len(kept), kept_wrong=sum(not is_equiv(r["weak_pred"], gold2[r["id"]], "gsm8k") for r in kept))
    return dict(run=str(run_dir), models=models, stage1=rounds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    for r in ap.parse_args().run_dirs: print(json.dumps(run_errors(r)))


if __name__ == "__main__":
    main()
