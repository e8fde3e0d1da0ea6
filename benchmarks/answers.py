"""Answer-checking throughput on MATH500 gold-vs-gold (and GSM8K test), in checks/second.

    python benchmarks/answers.py [--repeat 3]

Rows:
  math500 is_equiv           extract_answer(gold solution) vs the gold `answer` field, through `is_equiv`
                             (equal normal forms short-cut the symbolic check, as in real scoring)
  math500 math-verify only   the same pairs forced through the math-verify helper process
                             (raw last-\\boxed{} vs raw answer: the cost of one symbolic check)
  math500 extract_answer     extraction + Minerva normalisation alone
  gsm8k-test is_equiv        extract_answer(' ' + gold solution) vs the gold answer
"""
import argparse
import json
import time

from w2s_nb.answers import MathChecker, extract_answer, is_equiv, last_boxed
from w2s_nb.data import load_gsm8k, load_math, resolve_data_dir


def rate(fn, items, repeat: int) -> tuple[float, int]:
    "(checks per second, number of True results) of `fn` over `items`, best of `repeat` passes."
    best, hits = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        hits = sum(bool(fn(*x)) for x in items)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best, hits


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    d = resolve_data_dir()
    if d is None: raise SystemExit("set W2S_DATA_DIR to a folder holding gsm8k/ and math/ JSONL files (see README, Data)")
    m500 = load_math(d / "math" / "test.jsonl")
    sols, golds = list(m500["solution"]), list(m500["answer"])
    gsm = [json.loads(l) for l in open(d / "gsm8k" / "test.jsonl")]
    checker = MathChecker(timeout=5)
    checker.check([("1", "1")])                                   # start the helper process outside the timing
    is_equiv("1", "2", "math")
    rows = [
        ("math500 is_equiv", lambda s, g: is_equiv(extract_answer(s, "math"), g, "math"), list(zip(sols, golds))),
        ("math500 math-verify only", lambda s, g: checker.check([(g, last_boxed(s))]), list(zip(sols, golds))),
        ("math500 extract_answer", lambda s, g: extract_answer(s, "math"), list(zip(sols, golds))),
        ("gsm8k-test is_equiv", lambda s, g: is_equiv(extract_answer(" " + s, "gsm8k"), g.split("####")[-1], "gsm8k"),
         [(r["answer"], r["answer"]) for r in gsm]),
    ]
    print(f"{'benchmark':28s} {'n':>5s} {'correct':>8s} {'checks/s':>10s}")
    for name, fn, items in rows:
        r, hits = rate(fn, items, args.repeat)
        print(f"{name:28s} {len(items):5d} {hits:8d} {r:10.0f}")
    checker.close()


if __name__ == "__main__":
    main()
