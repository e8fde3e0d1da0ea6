"""Both extraction rules on the texts of a finished run: how many answers each finds, and how many are right.

    python benchmarks/run_extraction.py runs/bench-seed0 [more run dirs]

Text sets: D_weak (weak model, zero-shot on D_gold,2), D_icl (untrained strong model, weak-ICL on D_gold,2), and the
test predictions of every evaluated model (`eval/<name>.jsonl`). The run itself used `data.answer_extraction`; the
other rule is applied to the same texts afterwards. Gold answers are the run's hidden D_gold,2 gold and test gold.
"""
import sys
from pathlib import Path

from w2s_nb.answers import EXTRACTION_RULES, extract_answer, is_equiv
from w2s_nb.config import load_config
from w2s_nb.data import answer_format
from w2s_nb.files import read_jsonl
from w2s_nb.rundir import RunDir


def counts(texts: list[str], golds: list[str], fmt: str, rule: str) -> tuple[int, int]:
    "(answered, correct) under `rule`."
    preds = [extract_answer(t, fmt, rule=rule) for t in texts]
    return sum(bool(p) for p in preds), sum(bool(p) and is_equiv(p, g, fmt) for p, g in zip(preds, golds))


def text_sets(run: Path) -> list[tuple[str, list[str], list[str]]]:
    "(name, texts, gold answers) of the run's label sets and test predictions."
    gold2 = RunDir(run).gold2_by_id("answer")
    test = {r["id"]: r["answer"] for r in read_jsonl(run / "data" / "test.jsonl")}
    sets = []
    for name, path in (("D_weak", run / "weak" / "d_weak.jsonl"), ("D_icl", run / "stage1" / "round1" / "d_icl.jsonl")):
        recs = read_jsonl(path)
        sets.append((name, [r["text"] for r in recs], [gold2[r["id"]] for r in recs]))
    for path in sorted((run / "eval").glob("*.jsonl")):
        rows = read_jsonl(path)
        sets.append((f"test: {path.stem}", [r["prediction"] for r in rows], [test[r["id"]] for r in rows]))
    return sets


def main():
    for run in map(Path, sys.argv[1:]):
        fmt = answer_format(load_config(run / "config.yaml").data)
        print(f"\n{run}  ({fmt})\n{'texts':24s} {'n':>5s} " + " ".join(f"{r + ' answered':>17s} {r + ' correct':>15s}" for r in EXTRACTION_RULES))
        for name, texts, golds in text_sets(run):
            cells = [counts(texts, golds, fmt, r) for r in EXTRACTION_RULES]
            print(f"{name:24s} {len(texts):5d} " + " ".join(f"{a:17d} {c:15d}" for a, c in cells))


if __name__ == "__main__":
    main()
