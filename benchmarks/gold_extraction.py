"""How often each extraction rule reads the gold answer back from the gold solutions (GSM8K train / test, MATH500).

    python benchmarks/gold_extraction.py

Two texts per problem: the data file's own solution (GSM8K: the `answer` field with its `<<...>>` notes and
`#### N` line; MATH500: the `solution` field, whose answer is in a `\\boxed{}`), and the SFT target the weak model
is trained on (`data.sft_target`: GSM8K `sol\\n#### N`, MATH `sol The answer is: X`). For each rule: the share of
texts with a non-empty answer, and the share whose answer `is_equiv` the gold answer.
"""
import json

from w2s_nb.answers import EXTRACTION_RULES, extract_answer, is_equiv
from w2s_nb.data import load_gsm8k, load_math, resolve_data_dir, sft_target


def rates(texts: list[str], golds: list[str], fmt: str, rule: str) -> tuple[float, float]:
    "(share non-empty, share equal to gold) of the answers `rule` extracts from `texts`."
    preds = [extract_answer(t, fmt, rule=rule) for t in texts]
    return (sum(bool(p) for p in preds) / len(preds),
            sum(bool(p) and is_equiv(p, g, fmt) for p, g in zip(preds, golds)) / len(preds))


def main():
    d = resolve_data_dir()
    if d is None: raise SystemExit("set W2S_DATA_DIR to a folder holding gsm8k/ and math/ JSONL files (see README, Data)")
    rows = []
    for split in ("train", "test"):
        path = d / "gsm8k" / f"{split}.jsonl"
        ds, raw = load_gsm8k(path), [json.loads(l) for l in open(path)]
        golds = list(ds["answer"])
        rows.append((f"gsm8k {split} file solution", [" " + r["answer"] for r in raw], golds, "gsm8k"))
        rows.append((f"gsm8k {split} SFT target", [sft_target(r["solution"], r["answer"], "gsm8k") for r in ds], golds, "gsm8k"))
    m = load_math(d / "math" / "test.jsonl")
    golds = list(m["answer"])
    rows.append(("math500 file solution", [" " + s for s in m["solution"]], golds, "math"))
    rows.append(("math500 SFT target", [sft_target(r["solution"], r["answer"], "math") for r in m], golds, "math"))
    print(f"{'texts':30s} {'n':>5s} " + " ".join(f"{r + ' answered':>17s} {r + ' correct':>16s}" for r in EXTRACTION_RULES))
    for name, texts, golds, fmt in rows:
        cells = [f"{100 * a:16.1f}% {100 * c:15.1f}%" for a, c in (rates(texts, golds, fmt, r) for r in EXTRACTION_RULES)]
        print(f"{name:30s} {len(texts):5d} " + " ".join(cells))


if __name__ == "__main__":
    main()
