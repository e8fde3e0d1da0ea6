"""Shared fixtures: a tiny tokenizer + Llama saved as a normal HF directory (no downloads), and the real data.

Tests that need the real GSM8K / MATH files take the `real_data` fixture: the folder in `$W2S_DATA_DIR`
(CI sets it to ../shared/data). Without it they are skipped with the reason, unless
`W2S_REQUIRE_DATA=1` (CI), which turns the skip into a failure so that CI runs them all."""
import os
import random
from pathlib import Path

import pytest

from w2s_nb.world import build_tokenizer, new_llama

REAL_FILES = ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "math/test.jsonl", "math/test5000_hendrycks.jsonl")


@pytest.fixture(scope="session")
def real_data() -> Path:
    "The folder with the real GSM8K / MATH JSONL files, or skip (fail under W2S_REQUIRE_DATA=1)."
    d = os.environ.get("W2S_DATA_DIR")
    missing = [f for f in REAL_FILES if not d or not (Path(d) / f).is_file()]
    if not missing: return Path(d)
    why = (f"needs the real GSM8K / MATH files ({', '.join(missing)} missing): set W2S_DATA_DIR to a folder holding "
           f"{', '.join(REAL_FILES)} (W2S_DATA_DIR={d!r})")
    if os.environ.get("W2S_REQUIRE_DATA") == "1": pytest.fail(why + " [W2S_REQUIRE_DATA=1]")
    pytest.skip(why)


def tiny_corpus(n: int = 200, seed: int = 0) -> list[str]:
    "Short arithmetic question/answer texts in the project's prompt format."
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append(f"Question: What is {a} plus {b}?\nAnswer: {a} + {b} = {a + b}. #### {a + b}")
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    "A saved tiny model dir: byte-level BPE tokenizer (vocab 320) + 2-layer Llama, hidden 64 (safetensors)."
    d = tmp_path_factory.mktemp("tiny_llama")
    tok = build_tokenizer(tiny_corpus(), vocab_size=320)
    model = new_llama(tok, hidden=64, layers=2, heads=4, intermediate=128, max_pos=256, seed=0)
    model.save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return str(d)


def split_qa(text: str) -> dict:
    "A corpus text → {prompt, completion} at the 'Answer:' marker."
    q, a = text.split("Answer:", 1)
    return {"prompt": q + "Answer:", "completion": a}


@pytest.fixture(scope="session")
def tiny_examples():
    "64 prompt/completion SFT examples of the tiny arithmetic task."
    return [split_qa(t) for t in tiny_corpus(64, seed=1)]


@pytest.fixture(scope="session")
def tiny_pairs():
    "32 preference pairs: a correct sum (chosen) vs the same text with the wrong operator (rejected)."
    rng = random.Random(2)
    out = []
    for _ in range(32):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append({"prompt": f"Question: What is {a} plus {b}?\nAnswer:",
                    "chosen": f" {a} + {b} = {a + b}. #### {a + b}",
                    "rejected": f" {a} - {b} = {a + b}. #### {a + b}"})
    return out
