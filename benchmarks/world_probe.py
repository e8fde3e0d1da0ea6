"""Probe a world model in context: greedy accuracy by number of steps, with k gold demonstrations.

    python benchmarks/world_probe.py [MODEL_DIR] [--shots 4] [--n 100] [--steps 1 2 3 4]

MODEL_DIR defaults to the shipped strong model (`world:strong`). Demonstrations and problems are drawn
from the world's generator (seed 5), prompts are the package's few-shot `Question:/Answer:` prompts
(`data.few_shot_prompt`), and answers are read with its strict GSM8K extraction (`answers.extract_answer`). `nbs/04_world.ipynb` quotes these figures.
"""
import argparse
import json
import random

from w2s_nb.answers import extract_answer
from w2s_nb.config import ModelConfig
from w2s_nb.data import few_shot_prompt
from w2s_nb.models import ModelRef, load_model, load_tokenizer, resolve_model_path
from w2s_nb.sample import sample
from w2s_nb.world import WorldSpec, gsm_record, make_problem


def probe(model_dir: str, shots: int = 4, n: int = 100, steps=(1, 2, 3, 4), seed: int = 5) -> dict:
    "Greedy accuracy for each step count, `n` problems each, after `shots` gold demonstrations."
    spec, cfg = WorldSpec(), ModelConfig(path=model_dir, finetune="lora")
    model, tok = load_model(ModelRef(model_dir), cfg, "cpu"), load_tokenizer(ModelRef(model_dir), cfg)
    rng = random.Random(seed)
    demos = [(r["question"], r["answer"]) for r in (gsm_record(make_problem(rng, spec)) for _ in range(shots))]
    out = {}
    for k in steps:
        probs = [make_problem(rng, spec, k) for _ in range(n)]
        recs = sample(model, tok, [few_shot_prompt(demos, p["question"]) for p in probs], max_new_tokens=120,
                      batch_size=64, stop=["\n\n", "Question:"])
        out[k] = sum(extract_answer(r["samples"][0], "gsm8k") == str(p["answer"]) for r, p in zip(recs, probs)) / n
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="world:strong")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4])
    a = ap.parse_args()
    print(json.dumps(dict(model=a.model, shots=a.shots, accuracy_by_steps=probe(resolve_model_path(a.model), a.shots, a.n, a.steps))))


if __name__ == "__main__":
    main()
