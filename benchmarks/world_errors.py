"""What kind of mistake each model of a finished *world* run makes, and how many wrong labels Stage I keeps.

    python benchmarks/world_errors.py RUN_DIR [RUN_DIR ...]
    python benchmarks/world_errors.py RUN_DIR --sample ceiling [--questions 200] [--n 10] [--temperature 0.7]

The embedded world's solutions write one equation `a op b = c` per step. For every wrong test answer of every
evaluated model this compares the solution's equations with the gold solution's and names the first difference:
`operand` (a number read wrongly from the question or carried wrongly), `operation` (the wrong one of + - *),
`arithmetic` (right numbers and operation, wrong result), `no answer` (nothing extracted) or `other`. It also
prints, per Stage I round, how many `D_gold,2` questions the filter kept and how many of those share a wrong
answer (gold labels used for this diagnosis only), and each model's greedy answers by *way* (`ways`: how many, how many
right): `answer-only` (no equation before `####`), `compact` (a line computing two or more operations at once, the
two-style worlds of `benchmarks/two_style_world.py`) or `stepwise`. With `--sample MODEL` it instead samples `n` solutions of the
first `questions` test questions from that model of the run and gives the shares of right answers and of each error
kind among the samples (how much more often a sample slips than a greedy answer). `nbs/04_world.ipynb` quotes these figures. World runs only:
the equation format is the world's.
"""
import argparse
import json
import re
from collections import Counter
from pathlib import Path

from w2s_nb.answers import extract_answer, is_equiv
from w2s_nb.models import resolve_device
from w2s_nb.rundir import RunDir
from w2s_nb.files import read_jsonl
from w2s_nb.sample import generate_texts
from w2s_nb.data import question_prompts

from _w2s import run_model

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


def answer_way(prediction: str) -> str:
    "How a solution gets to its answer: `answer-only`, `compact` (two or more operations on one line) or `stepwise`."
    work = prediction.split("####")[0]
    if "=" not in work: return "answer-only"
    compact = any(len(re.findall(r"\d+ [-+*] ", line.split("=")[0])) >= 2 for line in work.splitlines() if "=" in line)
    return "compact" if compact else "stepwise"


def run_errors(run_dir) -> dict:
    "Error kinds per evaluated model, and Stage I's kept / kept-but-wrong counts per round."
    rd = RunDir(Path(run_dir))
    test = {r["id"]: r for r in read_jsonl(rd.path("data", "test.jsonl"))}
    gold2 = rd.gold2_by_id("answer")
    models = {}
    for f in sorted(rd.path("eval").glob("*.jsonl")):
        rows = read_jsonl(f)
        kinds = Counter(error_kind(test[r["id"]]["solution"], r["prediction"], r["extracted"]) for r in rows if not r["correct"])
        ways = {}
        for r in rows: ways.setdefault(answer_way(r["prediction"]), [0, 0])[int(r["correct"])] += 1
        models[f.stem] = dict(questions=len(rows), wrong=sum(kinds.values()), **dict(kinds.most_common()),
                              ways={w: dict(n=n + k, right=k) for w, (n, k) in sorted(ways.items())})
    rounds = {}
    for sel in sorted(rd.path("stage1").glob("round*/selection.jsonl")):
        kept = [r for r in read_jsonl(sel) if r["agree"]]
        rounds[sel.parent.name] = dict(kept=len(kept), kept_wrong=sum(not is_equiv(r["weak_pred"], gold2[r["id"]], "gsm8k") for r in kept))
    return dict(run=str(run_dir), models=models, stage1=rounds)


def sample_errors(run_dir, model: str, questions: int = 200, n: int = 10, temperature: float = 0.7) -> dict:
    "Shares of right answers and of each error kind among `n` samples per test question of run model `model`."
    rd, cfg, ref, _, test = run_model(run_dir, model)
    test = test[:questions]
    sampled = generate_texts(ref, cfg.strong, question_prompts(test, cfg), cfg.sampling, n=n,
                             temperature=temperature, top_p=1.0, seed=cfg.seed, device=resolve_device(cfg.device))
    kinds = Counter()
    for q, s in zip(test, sampled):
        for text in s["samples"]:
            pred = extract_answer(text, "gsm8k", rule=cfg.data.answer_extraction)
            kinds["right" if is_equiv(pred, q["answer"], "gsm8k") else error_kind(q["solution"], text, pred)] += 1
    total = sum(kinds.values())
    return dict(run=str(run_dir), model=model, questions=len(test), n=n, temperature=temperature,
                **{k: round(v / total, 3) for k, v in kinds.most_common()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--sample", metavar="MODEL", help="sample this model of each run instead (e.g. ceiling, m_plus)")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=0.7)
    a = ap.parse_args()
    for r in a.run_dirs:
        print(json.dumps(sample_errors(r, a.sample, a.questions, a.n, a.temperature) if a.sample else run_errors(r)))


if __name__ == "__main__":
    main()
