"""One-GPU benchmark on configs/gpu-smoke.yaml (Qwen2.5-0.5B -> Qwen2.5-1.5B, GSM8K, QLoRA, vLLM).

    python benchmarks/gpu.py [--pipeline] [--set KEY=VALUE ...]

Prints, for the strong model of the config: QLoRA SFT tokens/s and peak GPU memory, and greedy sampling tokens/s
with transformers `generate` vs vLLM on the test questions. `--pipeline` first runs the whole config
(`w2s run configs/gpu-smoke.yaml`) and prints its wall time. Needs a CUDA GPU and `pip install -e ".[cuda]"`;
not run by the project's sessions so far (no GPU was available).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from w2s_nb.config import load_config
from w2s_nb.models import base_ref, load_tokenizer
from w2s_nb.pipeline import absolute_paths, run_pipeline
from w2s_nb.rundir import RunDir, read_jsonl
from w2s_nb.sample import generate_texts
from w2s_nb.train import read_train_log, train_sft
from w2s_nb.weak import gold_sft_examples, question_prompts

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "gpu-smoke.yaml"
GIB = 2 ** 30


def sft_figures(cfg, examples, out_dir) -> dict:
    "Train the strong model once on `examples`: tokens/s (TRL's token count / train_runtime), peak GPU memory."
    torch.cuda.reset_peak_memory_stats()
    train_sft(base_ref(cfg.strong), cfg.strong, examples, out_dir, seed=cfg.seed, device="cuda")
    log = read_train_log(out_dir)
    tokens = max(r.get("num_tokens", 0) for r in log)
    runtime = next(r["train_runtime"] for r in reversed(log) if "train_runtime" in r)
    return dict(sft_tokens_per_s=tokens / runtime, sft_tokens=tokens, sft_s=runtime,
                sft_peak_gib=torch.cuda.max_memory_allocated() / GIB)


def sampling_figures(cfg, prompts, backend: str) -> dict:
    "Greedy sampling of `prompts` with one backend: generated tokens/s (tokens counted with the model's tokenizer)."
    import dataclasses
    sampling = dataclasses.replace(cfg.sampling, backend=backend)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    recs = generate_texts(base_ref(cfg.strong), cfg.strong, prompts, sampling, seed=cfg.seed, device="cuda")
    s = time.perf_counter() - t0
    tok = load_tokenizer(base_ref(cfg.strong), cfg.strong)
    tokens = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for r in recs for x in r["samples"])
    return {f"{backend}_tokens_per_s": tokens / s, f"{backend}_tokens": tokens, f"{backend}_s": s,
            f"{backend}_peak_gib": torch.cuda.max_memory_allocated() / GIB}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", action="store_true", help="first run the whole config and time it")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    cfg = absolute_paths(load_config(CONFIG, args.set))
    out = {"gpu": torch.cuda.get_device_name(0)}
    if args.pipeline:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "w2s_nb.cli", "run", str(CONFIG), *[f"--set={s}" for s in args.set]], cwd=ROOT)
        out |= dict(pipeline_exit=r.returncode, pipeline_s=time.perf_counter() - t0)
    else:  # only the data stage: the questions the figures below use
        run_pipeline(cfg, overrides=args.set, only=["data"], config_file=CONFIG)
    rd = RunDir(Path(cfg.out_dir) / cfg.name)
    gold1, test = read_jsonl(rd.path("data", "gold1.jsonl")), read_jsonl(rd.path("data", "test.jsonl"))
    with tempfile.TemporaryDirectory() as d:
        out |= sft_figures(cfg, gold_sft_examples(gold1, cfg), Path(d) / "sft")
    prompts = question_prompts(test, cfg)
    out |= sampling_figures(cfg, prompts, "hf")
    out |= sampling_figures(cfg, prompts, "vllm")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
