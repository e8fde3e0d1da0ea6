"""One-GPU benchmark and check: QLoRA SFT, the fine-tune surviving save + 4-bit reload on CUDA, freed memory, sampling.

    python benchmarks/gpu.py [--config configs/gpu-smoke.yaml] [--backends hf vllm] [--pipeline [--inline]]
                             [--set KEY=VALUE ...]

For the strong model of the config, on `cuda`, prints one JSON object:
- `sft_*`: QLoRA (the config's `finetune`) SFT on D_gold,1: tokens/s (TRL's token count / train_runtime), peak memory;
- `freed_gib`: GPU memory still allocated after `train_sft` returned, minus before it (0 when the model is freed);
- `logprob_*`: mean per-token log-prob of held-out gold solutions (the first test questions) under the base model and
  under the trained model *loaded back from its saved adapter* (4-bit base + unmerged LoRA, as sampling loads it),
  and the largest difference between two such loads; a fine-tune that survives the reload raises the log-prob;
- `<backend>_*`: greedy sampling tokens/s and peak memory with each backend on the test questions, by the trained
  model (the base answers zero-shot with a bare number in the embedded world, so its tokens/s would measure nothing).
`--pipeline` first runs the whole config (`w2s run CONFIG`, `--inline`: in this process's Python, no papermill)
and prints its exit code and wall time. `configs/gpu-smoke.yaml` needs the Hub and `pip install -e ".[cuda]"`;
the embedded world runs offline: `--config configs/world-qlora.yaml --backends hf --set device=cuda`.
"""
import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from w2s_nb.config import load_config
from w2s_nb.models import base_ref, load_model, load_tokenizer
from w2s_nb.pipeline import absolute_paths, run_pipeline
from w2s_nb.rundir import RunDir
from w2s_nb.files import read_jsonl
from w2s_nb.sample import generate_texts
from w2s_nb.train import completion_logprobs, read_train_log, train_sft
from w2s_nb.weak import gold_sft_examples
from w2s_nb.data import question_prompts

ROOT = Path(__file__).resolve().parent.parent
GIB = 2 ** 30


def sft_figures(cfg, examples, out_dir) -> tuple[dict, object]:
    "Train the strong model once on `examples`: tokens/s, peak GPU memory, memory left allocated after the call."
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    ref = train_sft(base_ref(cfg.strong), cfg.strong, examples, out_dir, seed=cfg.seed, device="cuda")
    freed = (torch.cuda.memory_allocated() - before) / GIB
    log = read_train_log(out_dir)
    tokens = max(r.get("num_tokens", 0) for r in log)
    runtime = next(r["train_runtime"] for r in reversed(log) if "train_runtime" in r)
    return dict(sft_tokens_per_s=tokens / runtime, sft_tokens=tokens, sft_s=runtime,
                sft_peak_gib=torch.cuda.max_memory_allocated() / GIB, freed_gib=freed), ref


def completion_sums(ref, cfg, prompts: list, completions: list) -> torch.Tensor:
    "Load `ref` from disk for inference on CUDA; the summed log-prob of each completion (`completion_logprobs`)."
    model = load_model(ref, cfg.strong, "cuda")
    lp = completion_logprobs(model, load_tokenizer(ref, cfg.strong, padding_side="right"), prompts, completions)
    del model
    torch.cuda.empty_cache()
    return lp


def adapter_figures(cfg, trained, held_out: list) -> dict:
    "The fine-tune's effect after save + reload: held-out log-prob per token, base vs trained; two reloads must agree."
    prompts, completions = [e["prompt"] for e in held_out], [e["completion"] for e in held_out]
    tok = load_tokenizer(base_ref(cfg.strong), cfg.strong)  # the adapters keep the base's tokenizer
    n = sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions)
    base = float(completion_sums(base_ref(cfg.strong), cfg, prompts, completions).sum()) / n
    lp1, lp2 = (completion_sums(trained, cfg, prompts, completions) for _ in range(2))
    tr1 = float(lp1.sum()) / n
    return dict(logprob_base=base, logprob_trained_reloaded=tr1, logprob_gain=tr1 - base,
                reload_max_abs_diff=float((lp1 - lp2).abs().max()), held_out=len(held_out))


def sampling_figures(cfg, ref, prompts, backend: str) -> dict:
    "Greedy sampling of `prompts` by model `ref` with one backend: generated tokens/s (counted with the base's tokenizer)."
    sampling = dataclasses.replace(cfg.sampling, backend=backend)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    recs = generate_texts(ref, cfg.strong, prompts, sampling, seed=cfg.seed, device="cuda")
    s = time.perf_counter() - t0
    tok = load_tokenizer(base_ref(cfg.strong), cfg.strong)
    tokens = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for r in recs for x in r["samples"])
    return {f"{backend}_tokens_per_s": tokens / s, f"{backend}_tokens": tokens, f"{backend}_s": s,
            f"{backend}_prompts": len(prompts), f"{backend}_peak_gib": torch.cuda.max_memory_allocated() / GIB}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "gpu-smoke.yaml"))
    ap.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    ap.add_argument("--pipeline", action="store_true", help="first run the whole config and time it")
    ap.add_argument("--inline", action="store_true", help="with --pipeline: run the stages in-process (no papermill)")
    ap.add_argument("--held-out", type=int, default=64, help="test questions whose gold solutions score the fine-tune")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    config = Path(args.config).resolve()
    cfg = absolute_paths(load_config(config, args.set))
    out = {"gpu": torch.cuda.get_device_name(0), "config": config.name, "torch": torch.__version__}
    if args.pipeline:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "w2s_nb.cli", "run", str(config), *[f"--set={s}" for s in args.set],
               *(["--inline"] if args.inline else [])]
        out |= dict(pipeline_exit=subprocess.run(cmd, cwd=ROOT).returncode, pipeline_s=time.perf_counter() - t0)
    else:  # only the data stage: the questions the figures below use
        run_pipeline(cfg, overrides=args.set, only=["data"], inline=True, config_file=config)
    rd = RunDir(Path(cfg.out_dir) / cfg.name)
    gold1, test = read_jsonl(rd.path("data", "gold1.jsonl")), read_jsonl(rd.path("data", "test.jsonl"))
    with tempfile.TemporaryDirectory() as d:
        figs, trained = sft_figures(cfg, gold_sft_examples(gold1, cfg), Path(d) / "sft")
        out |= figs
        out |= adapter_figures(cfg, trained, gold_sft_examples(test[:args.held_out], cfg))
        prompts = question_prompts(test, cfg)
        for backend in args.backends:
            out |= sampling_figures(cfg, trained, prompts, backend)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
