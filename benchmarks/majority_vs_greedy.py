"""Greedy decoding vs the majority of n samples for one model of a finished run, on its test split.

    python benchmarks/majority_vs_greedy.py RUN_DIR [--model m_plus] [--n 10] [--temperature 0.7] [--top-p 1.0] [--min-p 0.1]

Stage II can only teach M_plus what its own majority vote knows better than its greedy answer: DPO on confident
majority answers moves greedy decoding towards them. This prints, for the test questions, greedy accuracy,
majority-of-`n` accuracy, per-sample accuracy, and the 2x2 table (greedy right?, majority right?) for all
questions and for those whose confidence (the majority's share) reaches the run's `tau`
(`probes.majority_vs_greedy`). Greedy answers are the run's own evaluation rows (generated again only if the run evaluated by majority vote);
samples come from the package's `generate_texts` with the run's model and sampling settings;
answers are read with the run's extraction rule. `nbs/19_probes.ipynb` quotes these figures.
`--min-p P` (issue 31's probe; transformers sampling only) keeps only tokens with at least P times the top token's
probability: the package's samplers take no `min_p`, so this script sets transformers' `GenerationConfig.min_p` on
every sampling call it makes (`nbs/04_world.ipynb`, last section, quotes those figures).
"""
import argparse
import json
from pathlib import Path

from w2s_nb.answers import extract_answer
from w2s_nb.data import answer_format
from w2s_nb.models import resolve_device
from w2s_nb.rundir import RunDir
from w2s_nb.files import read_jsonl
from w2s_nb.sample import generate_texts
from w2s_nb.probes import majority_vs_greedy
from w2s_nb.data import question_prompts

from _w2s import run_model


def greedy_answers(rd: RunDir, cfg, name: str, ref, prompts: list, fmt: str, rule: str, dev: str) -> list[str]:
    "The model's greedy answers: from the run's own evaluation (`eval/<name>.jsonl`) when it was greedy, else generated."
    rows = rd.path("eval", f"{name}.jsonl")
    if cfg.eval.n == 1 and rows.exists():
        by_id = {r["id"]: r["extracted"] for r in read_jsonl(rows)}
        if all(p["id"] in by_id for p in prompts): return [by_id[p["id"]] for p in prompts]
    return [extract_answer(g["samples"][0], fmt, rule=rule) for g in generate_texts(ref, cfg.strong, prompts, cfg.sampling, seed=cfg.seed, device=dev)]


def compare(run_dir, model: str = "m_plus", n: int = 10, temperature: float = 0.7, top_p: float = 1.0) -> dict:
    "`probes.majority_vs_greedy` for run model `model` on the run's test split (greedy and `n` samples at `temperature`)."
    rd, cfg, ref, entry, test = run_model(run_dir, model)
    fmt, rule, dev = answer_format(cfg.data), cfg.data.answer_extraction, resolve_device(cfg.device)
    prompts = question_prompts(test, cfg)
    sampled = generate_texts(ref, cfg.strong, prompts, cfg.sampling, n=n, temperature=temperature, top_p=top_p, seed=cfg.seed, device=dev)
    out = majority_vs_greedy(greedy_answers(rd, cfg, entry.get("alias_of", model), ref, prompts, fmt, rule, dev),
                             [[extract_answer(t, fmt, rule=rule) for t in s["samples"]] for s in sampled],
                             [q["answer"] for q in test], fmt, cfg.stage2.tau)
    return dict(run=str(run_dir), model=model, n=n, temperature=temperature, top_p=top_p, tau=cfg.stage2.tau, **out)


def use_min_p(min_p: float):
    "Make every sampling `transformers.GenerationConfig` built in this process carry `min_p` (a probe, not an option)."
    import transformers
    init = transformers.GenerationConfig.__init__
    def with_min_p(self, **kw):
        if kw.get("do_sample"): kw["min_p"] = min_p
        init(self, **kw)
    transformers.GenerationConfig.__init__ = with_min_p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--model", default="m_plus", help="a key of the run's models.json files (default: Stage I's M_plus)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--min-p", type=float, default=None, help="transformers' min_p for the samples (a probe)")
    a = ap.parse_args()
    if a.min_p is not None:
        if not 0 < a.min_p <= 1: ap.error(f"--min-p {a.min_p}: expected 0 < min_p <= 1")
        use_min_p(a.min_p)
    print(json.dumps(dict(compare(a.run_dir, a.model, a.n, a.temperature, a.top_p), min_p=a.min_p), indent=1))


if __name__ == "__main__":
    main()
