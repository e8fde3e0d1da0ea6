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

    python benchmarks/two_style_world.py --compact-docs 0.2 [--compact-in-target | --compact-target-share S] [--strong-docs 28000]

The third session's variant: the shipped corpus is kept and compact documents are *added* (a share `--compact-docs`
of all documents, so a model pretrained on `24000 / (1 - Q)` documents still sees the shipped number of the
others): for the weak model in every format, for the strong one in the corpus's other formats only or, with
`--compact-in-target`, in the task's `Question:/Answer:` format too (`--compact-target-share S`: that share of them
in the task's format). Both models are pretrained again on the shipped tokenizer (weak: the shipped document count scaled up
so, strong: `--strong-docs`), and the world's data files give *every* training solution in the compact style (the
weak supervisor learns to write compact chains; the test file stays stepwise, its solutions are never read). The
run then measures the precondition twice: at Stage II's temperature as it is, and with `--min-p` 0.3.
About 20 minutes on 2 cores; `nbs/04_world.ipynb`, last section, has the figures.

    python benchmarks/two_style_world.py --answer-only 0.8

The fourth session's variant, the corpus's own second way: the shipped models (whose pretraining puts 80% of the
task's `Question:/Answer:` documents answer-only), and data files whose training solutions are `#### N` alone for
a share of the questions (by a hash of the question; the rest and the test file stepwise). About 10 minutes.
"""
import argparse
import dataclasses
import json
import random
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


def compact_doc(rng, probs: list[dict], in_target) -> list:
    """A corpus document of compact solutions in one of the other formats, or in any format including the task's
    (`in_target` True), or in the task's with probability `in_target` (a float)."""
    if isinstance(in_target, float): ql, al = W.TARGET if rng.random() < in_target else rng.choice(W.WRAPPERS)
    else: ql, al = rng.choice(W.WRAPPERS + ([W.TARGET] if in_target else []))
    marker = rng.choice(W.MARKERS)
    segs = []
    for i, pr in enumerate(probs):
        body = f"\n{al} " + compact(pr) + "\n" + marker.format(n=pr["answer"])
        segs += [(("\n\n" if i else "") + ql, True), (" " + pr["question"], False), (body, True)]
    return segs


def corpus_with_compact(q: float, in_target: bool):
    "`world.corpus` with a share `q` of compact documents added before the shipped draw of each document."
    def corpus(seed: int, n_docs: int, spec: W.WorldSpec = W.WorldSpec()) -> list[list]:
        rng, docs = random.Random(seed), []
        while len(docs) < n_docs:
            if rng.random() < q:
                docs.append(compact_doc(rng, [W.make_problem(rng, spec) for _ in range(rng.randint(1, 4))], in_target))
            elif rng.random() < spec.p_drill: docs.append(W.drill(rng, rng.randint(10, 30), spec))
            else: docs.append(W.render_doc(rng, [W.make_problem(rng, spec) for _ in range(rng.randint(1, 4))], spec))
        return docs
    return corpus


def write_data(out: Path, train_record) -> dict:
    """The world's data files in `out / "data"` from the shipped draw (`world_data_paths`' problems): `train_record`
    gives each of the 8,000 training records, the 1,000 test records are the shipped world's (stepwise)."""
    probs, data = W.dataset(10_000, 9000), dict(train=out / "data" / "train.jsonl", test=out / "data" / "test.jsonl")
    W.atomic_write_jsonl(data["train"], [train_record(p) for p in probs[:8000]])
    W.atomic_write_jsonl(data["test"], [W.gsm_record(p) for p in probs[8000:]])
    return {k: str(v) for k, v in data.items()}


def build_added(out: Path, q: float, in_target, strong_docs: int) -> dict:
    """Both models pretrained on the shipped corpus plus compact documents (the shipped tokenizer), and data files
    whose training solutions are all compact (the test file stepwise)."""
    base, tok = W.WorldSpec(), W.world_model_path("strong")  # the shipped models share one tokenizer
    spec = dataclasses.replace(base, weak=dataclasses.replace(base.weak, docs=round(base.weak.docs / (1 - q))),
                               strong=dataclasses.replace(base.strong, docs=strong_docs))
    for role, where in (("weak", True), ("strong", in_target)):  # the weak model's compact documents: every format
        W.corpus = corpus_with_compact(q, where)
        if not (out / role / "world.json").exists(): W.build_model(role, out / role, spec, tokenizer_dir=tok)
    data = write_data(out, lambda p: {"question": p["question"], "answer": compact(p) + f"\n#### {p['answer']}"})
    return dict(models={r: str(out / r) for r in ("weak", "strong")}, data=data)


def build_answer_only(out: Path, share: float) -> dict:
    "The shipped models, and data files whose training solutions are `#### N` alone for `share` of the questions."
    def record(p: dict) -> dict:
        if zlib.crc32(p["question"].encode()) % 10 >= round(share * 10): return W.gsm_record(p)
        return {"question": p["question"], "answer": f"#### {p['answer']}"}
    return dict(models={r: str(W.world_model_path(r)) for r in ("weak", "strong")}, data=write_data(out, record))


def build(out: Path, p_compact: float) -> dict:
    "Both models and the data files of the candidate world in `out` (skipped where already built)."
    W.render_solution = two_style_renderer(p_compact)
    models = W.build_world(out)
    data = W.world_data_paths(out)
    return dict(models={r: m["path"] for r, m in models.items()}, data={k: str(v) for k, v in data.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    world_kind = ap.add_mutually_exclusive_group(required=True)
    world_kind.add_argument("--p-compact", type=float, help="share of worked solutions in the compact style")
    world_kind.add_argument("--compact-docs", type=float, help="share of compact documents added to the corpus")
    world_kind.add_argument("--answer-only", type=float, help="share of training solutions as `#### N` alone")
    ap.add_argument("--compact-in-target", action="store_true", help="compact documents in the task's format too")
    ap.add_argument("--compact-target-share", type=float, default=None,
                    help="instead: this share of the compact documents in the task's format, the rest in the others")
    ap.add_argument("--strong-docs", type=int, default=28000, help="strong pretraining documents (--compact-docs)")
    ap.add_argument("--out", default=None, help="where the world goes (default: runs/two-style-<p>)")
    ap.add_argument("--skip-run", action="store_true", help="only build the world")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE overrides for the run")
    a = ap.parse_args()
    share = next(x for x in (a.p_compact, a.compact_docs, a.answer_only) if x is not None)
    in_target = a.compact_in_target if a.compact_target_share is None else a.compact_target_share
    if not 0 <= share <= 1 or (a.compact_docs is not None and share == 1): ap.error(f"share {share}: expected 0 to 1")
    if a.compact_target_share is not None and (a.compact_docs is None or not 0 <= a.compact_target_share <= 1):
        ap.error(f"--compact-target-share {a.compact_target_share}: expected 0 to 1, with --compact-docs")
    if a.answer_only is not None and abs(share * 10 - round(share * 10)) > 1e-9:
        ap.error(f"--answer-only {share}: expected a multiple of 0.1")
    if a.p_compact is not None: tag, make = f"two-style-{share:g}", lambda out: build(out, share)
    elif a.answer_only is not None: tag, make = f"answer-only-{share:g}", lambda out: build_answer_only(out, share)
    else: tag, make = (f"compact-docs-{share:g}-target-{in_target}-{a.strong_docs}",
                       lambda out: build_added(out, share, in_target, a.strong_docs))
    world = make(Path(a.out or ROOT / "runs" / f"{tag}-world"))
    print(json.dumps(world, indent=1))
    if a.skip_run: return
    sets = [f"weak.path={world['models']['weak']}", f"strong.path={world['models']['strong']}",
            f"data.path={world['data']['train']}", f"data.test_path={world['data']['test']}", *a.set]
    rc, secs = w2s_run(tag, sets)
    if rc: raise SystemExit(f"w2s run failed ({rc}) after {secs:.0f} s")
    for extra in ([], ["--min-p", "0.3"]) if a.p_compact is None else ([],):
        probe = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "majority_vs_greedy.py"), str(ROOT / "runs" / tag),
                                *extra], capture_output=True, text=True, check=True)
        print(probe.stdout)


if __name__ == "__main__":
    main()
