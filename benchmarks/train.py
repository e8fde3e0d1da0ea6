"""SFT training throughput (tokens/s) with `train_sft`, LoRA and QLoRA (and full with --full).

    python benchmarks/train.py [--model DIR] [--examples 128] [--batch 8] [--hidden 256 --layers 4]

Tokens = prompt + completion (+EOS) tokens of every example x epochs, over TRL's `train_runtime`.
"""
import argparse
import random
import tempfile

import torch

from w2s_nb.config import LoraSettings, ModelConfig, SFTSettings
from w2s_nb.models import ModelRef, load_tokenizer
from w2s_nb.world import build_tokenizer, new_llama
from w2s_nb.train import read_train_log, train_sft


def toy_examples(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        out.append({"prompt": f"Question: Tom has {a} apples and buys {b} more. How many now?\nAnswer:",
                    "completion": f" He has {a} + {b} = {a + b} apples. #### {a + b}"})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    ex = toy_examples(a.examples)
    if a.model is None:
        a.model = tempfile.mkdtemp()
        tok = build_tokenizer([e["prompt"] + e["completion"] for e in toy_examples(400, 1)], vocab_size=512)
        new_llama(tok, a.hidden, a.layers, max(1, a.hidden // 64), int(a.hidden * 8 / 3)).save_pretrained(a.model)
        tok.save_pretrained(a.model)
    tok = load_tokenizer(ModelRef(a.model), ModelConfig(path=a.model))
    n_tok = sum(len(tok(e["prompt"] + e["completion"])["input_ids"]) + 1 for e in ex)
    for ft in ["lora", "qlora"] + (["full"] if a.full else []):
        cfg = ModelConfig(path=a.model, finetune=ft, lora=LoraSettings(),
                          sft=SFTSettings(epochs=1, lr=1e-4, batch_size=a.batch, max_length=128))
        out = tempfile.mkdtemp()
        train_sft(ModelRef(a.model), cfg, ex, out, seed=0, device=a.device)
        rt = [r for r in read_train_log(out) if "train_runtime" in r][0]["train_runtime"]
        print(f"{ft:>6}: {n_tok} tokens in {rt:.2f} s = {n_tok / rt:.0f} tokens/s "
              f"({a.examples} examples, batch {a.batch}, {torch.get_num_threads()} threads, {a.device})")


if __name__ == "__main__":
    main()
