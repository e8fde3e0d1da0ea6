"""Stage II's ceiling in a world: DPO from M_plus on pairs labelled with the *gold* answers, on finished runs.

    python benchmarks/stage2_oracle.py RUN_DIR [RUN_DIR ...] [--pairs own|own4|greedy|weak|run] [--set KEY=VALUE ...]

Stage II picks its pairs by self-consistency, without gold labels. Whatever that selection does, DPO cannot do
better than it does on pairs whose labels are *known* to be right. This builds such pairs for the run's D_gold,2
questions from M_plus's own Stage II samples (`stage2/samples`) and the hidden gold answers, trains DPO from M_plus
with the run's `stage2.pref` settings (overridable with `--set stage2.pref.epochs=1`, `--set strong.finetune=full`
etc.), evaluates the result greedily on the run's test split, and prints a JSON line per run and the exact McNemar
test against M_plus (b = questions M_plus gets right and the oracle model wrong, c = the reverse), per run and pooled
over the runs.

Pair sets (`--pairs`; one pair per question unless said):
- `own`: a right sample (chosen) against a wrong one (rejected), where M_plus's samples hold both;
- `own4`: up to 4 such pairs per question;
- `greedy`: M_plus's greedy solution against a sample: rejected when greedy is wrong (chosen: a right sample),
  chosen when it is right (rejected: a wrong sample), so the pairs target what greedy decoding gets wrong;
- `weak`: the paper's two pair kinds with gold in place of confidence: the weak solution chosen when it is right
  (rejected: a wrong sample), rejected when it is wrong (chosen: a right sample);
- `run`: no gold: the run's own Stage II pairs (`stage2/pairs.jsonl`, the paper's rule), to compare training
  settings on the pairs the method picks with the same settings on gold-labelled ones.
Models and results go under `RUN_DIR/benchmarks/stage2_oracle/<pairs>-<hash of settings and pairs>/` (a re-run
reuses them). The JSON lines are the output's last lines (TRL logs its training steps before them).
Uses the gold labels of D_gold,2, so it is a diagnostic for a world, never a step of the method.
"""
import argparse
import dataclasses
import json
import random

from w2s_nb.answers import extract_answer, is_equiv
from w2s_nb.data import answer_format, zero_shot_prompt
from w2s_nb.eval import evaluate, summarize
from w2s_nb.stats import mcnemar, paired_counts
from w2s_nb.models import resolve_device
from w2s_nb.rundir import RunDir
from w2s_nb.files import read_jsonl, stable_hash
from w2s_nb.sample import generate_texts, read_shards
from w2s_nb.data import label_completion
from w2s_nb.probes import ORACLE_PAIRS, oracle_pairs
from w2s_nb.train import train_preference
from w2s_nb.data import question_prompts

from _w2s import run_model

def gold_pairs(rd: RunDir, cfg, kind: str, m_plus, dev: str) -> list:
    "`kind` pairs for the run's D_gold,2 questions from M_plus's Stage II samples, labelled by the hidden gold answers."
    fmt, rule = answer_format(cfg.data), cfg.data.answer_extraction
    d_weak = read_jsonl(rd.path("weak", "d_weak.jsonl"))
    gold = rd.gold2_by_id("answer")
    samples = {q: r["samples"] for q, r in read_shards(rd.path("stage2", "samples")).items()}
    if missing := [w["id"] for w in d_weak if w["id"] not in samples]:
        raise SystemExit(f"{rd.path('stage2', 'samples')}: no Stage II samples for {len(missing)} questions (run stage2 first)")
    greedy = {}
    if kind == "greedy":
        greedy = {r["id"]: r["samples"][0] for r in generate_texts(m_plus, cfg.strong, question_prompts(d_weak, cfg), cfg.sampling,
                                                                  seed=cfg.seed, device=dev)}
    ok = lambda pred, qid: bool(pred) and is_equiv(pred, gold[qid], fmt)
    right = lambda text, qid: ok(extract_answer(text, fmt, rule=rule), qid)
    pairs = []
    for w in d_weak:
        q, ss = w["id"], samples[w["id"]]
        g = greedy.get(q, "")
        qp = oracle_pairs(kind, [s for s in ss if right(s, q)], [s for s in ss if not right(s, q)],
                          (w["text"], ok(w["pred"], q)), (g, right(g, q)), random.Random(stable_hash([cfg.seed, q])))
        prompt = zero_shot_prompt(w["question"], cfg.data.prompt_template)
        pairs += [dict(prompt=prompt, chosen=label_completion(c), rejected=label_completion(r)) for c, r in qp]
    return pairs

def oracle(run_dir, kind: str, sets: list) -> dict:
    "Train DPO from M_plus on `kind` oracle pairs and compare it with M_plus on the run's test split."
    rd, cfg, m_plus, entry, test = run_model(run_dir, "m_plus", sets)
    fmt, rule, dev = answer_format(cfg.data), cfg.data.answer_extraction, resolve_device(cfg.device)
    if kind == "run":  # the method's own pairs, no gold
        pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in read_jsonl(rd.path("stage2", "pairs.jsonl"))]
    else: pairs = gold_pairs(rd, cfg, kind, m_plus, dev)
    out = rd.path("benchmarks", "stage2_oracle", f"{kind}-{stable_hash([dataclasses.asdict(cfg.stage2.pref), cfg.strong.finetune, pairs])[:10]}")
    ref = train_preference(m_plus, cfg.strong, cfg.stage2.pref, "dpo", pairs, out / "dpo", seed=cfg.seed, device=dev)
    rows = evaluate(ref, cfg.strong, test, question_prompts(test, cfg), cfg.eval, cfg.sampling, fmt, out_path=out / "eval.jsonl",
                    seed=cfg.seed, device=dev, rule=rule)
    base = read_jsonl(rd.path("eval", f"{entry.get('alias_of', 'm_plus')}.jsonl"))  # M_plus's own evaluation
    b, c = paired_counts(base, rows)
    return dict(run=str(run_dir), pairs=kind, n_pairs=len(pairs), pref=dataclasses.asdict(cfg.stage2.pref), finetune=cfg.strong.finetune,
                m_plus=summarize(base)["accuracy"], oracle_dpo=summarize(rows)["accuracy"], b=b, c=c, p=mcnemar(b, c))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--pairs", default="own", choices=(*ORACLE_PAIRS, "run"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the runs' config (stage2.pref.*, strong.finetune)")
    a = ap.parse_args()
    results = [oracle(r, a.pairs, a.set) for r in a.run_dirs]
    for r in results: print(json.dumps(r))
    b, c = sum(r["b"] for r in results), sum(r["c"] for r in results)
    print(json.dumps(dict(pooled=len(results), b=b, c=c, p=mcnemar(b, c),
                          gain_points=[round(100 * (r["oracle_dpo"] - r["m_plus"]), 1) for r in results])))


if __name__ == "__main__":
    main()
