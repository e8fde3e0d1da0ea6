"""Generated tokens/s: batched (`sample(batch_size=32)`) vs one prompt at a time, greedy.

    python benchmarks/sampling.py [--model DIR] [--prompts 32] [--new-tokens 64] [--hidden 256 --layers 4]

Without --model a random Llama is built (tokenizer trained on toy arithmetic text). Generated
tokens are counted exactly (non-pad tokens after each prompt in `generate`'s output).
"""
import argparse
import random
import tempfile
import time

import torch

from w2s_nb.config import ModelConfig
from w2s_nb.models import ModelRef, load_model, load_tokenizer
from w2s_nb.world import build_tokenizer, new_llama
from w2s_nb.sample import sample


def toy_texts(n=400, seed=0):
    rng = random.Random(seed)
    return [f"Question: Tom has {a} apples and buys {b} more. How many now?\nAnswer: {a} + {b} = {a + b}. #### {a + b}"
            for a, b in ((rng.randint(0, 999), rng.randint(0, 999)) for _ in range(n))]


def count_tokens(model, pad_id):
    "Wrap model.generate to count generated (non-pad) tokens."
    box, gen = [0], model.generate
    def counted(*a, **k):
        out = gen(*a, **k)
        box[0] += int((out[:, k["input_ids"].shape[1]:] != pad_id).sum())
        return out
    model.generate = counted
    return box


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.model is None:
        a.model = tempfile.mkdtemp()
        tok = build_tokenizer(toy_texts(), vocab_size=512)
        new_llama(tok, a.hidden, a.layers, max(1, a.hidden // 64), int(a.hidden * 8 / 3)).save_pretrained(a.model)
        tok.save_pretrained(a.model)
    ref, cfg = ModelRef(a.model), ModelConfig(path=a.model, finetune="lora", dtype=a.dtype)
    model, tok = load_model(ref, cfg, a.device), load_tokenizer(ref, cfg)
    n_par = sum(p.numel() for p in model.parameters())
    prompts = [t.split("Answer:")[0] + "Answer:" for t in toy_texts(a.prompts, seed=1)]
    box = count_tokens(model, tok.pad_token_id)
    res = {}
    for name, bs in (("batched", a.batch), ("one-by-one", 1)):
        sample(model, tok, prompts[:2], max_new_tokens=4, batch_size=bs)  # warm-up
        box[0] = 0
        t = time.perf_counter()
        sample(model, tok, prompts, max_new_tokens=a.new_tokens, batch_size=bs)
        dt = time.perf_counter() - t
        res[name] = box[0] / dt
        print(f"{name:>10}: {box[0]} tokens in {dt:.2f} s = {res[name]:.1f} tokens/s")
    print(f"model {n_par / 1e6:.2f}M params, {a.prompts} prompts x {a.new_tokens} new tokens, batch {a.batch}, "
          f"{a.device}, {a.dtype}, {torch.get_num_threads()} threads")
    print(f"ratio batched / one-by-one: {res['batched'] / res['one-by-one']:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
