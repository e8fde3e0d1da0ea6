"""Probes of a finished run (diagnostics that read gold): greedy against the majority vote, gold-labelled pairs."""
import random

import pytest

from w2s_nb.probes import ORACLE_PAIRS, majority_vs_greedy, oracle_pairs


def test_majority_vs_greedy_counts_corrections_and_spoils():
    # q1: greedy wrong, confident majority right; q2: greedy right, majority wrong at share 0.4 (below tau);
    # q3: both right; q4: no sample has an answer (empty majority counts as wrong, never confident)
    out = majority_vs_greedy(["4", "7", "9", "3"],
                             [["5", "5", "5", "4", "1"], ["6", "6", "7", "1", "2"], ["9"] * 5, [""] * 5],
                             ["5", "7", "9", "3"], "gsm8k", tau=0.6)
    assert (out["questions"], out["greedy"], out["majority"]) == (4, 3 / 4, 2 / 4)
    assert out["per_sample"] == 9 / 20
    assert out["table"] == {"greedy_right/majority_right": 1, "greedy_right/majority_wrong": 2, "greedy_wrong/majority_right": 1}
    assert out["table_confident"] == {"greedy_right/majority_right": 1, "greedy_wrong/majority_right": 1}
    # answers are scored by equivalence in the format, not by string: 0.5 is right for gold \frac{1}{2} in MATH
    math = majority_vs_greedy(["0.5"], [["\\frac{1}{2}", "\\frac{1}{2}", "3"]], ["\\frac{1}{2}"], "math", tau=0.6)
    assert math["table_confident"] == {"greedy_right/majority_right": 1} and math["per_sample"] == 2 / 3


def test_majority_vs_greedy_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 greedy answers, 1 sample lists, 1 gold"):
        majority_vs_greedy(["1", "2"], [["1"]], ["1"], "gsm8k", tau=0.6)
    with pytest.raises(ValueError, match="one sample per question"):
        majority_vs_greedy(["1"], [[]], ["1"], "gsm8k", tau=0.6)


def test_oracle_pairs_follow_the_gold_split_and_are_seeded():
    right, wrong = ["r1", "r2", "r3"], ["w1", "w2", "w3", "w4", "w5"]
    own4 = oracle_pairs("own4", right, wrong, ("weak", False), ("greedy", True), random.Random(1))
    assert len(own4) == 3 and all(c in right and r in wrong for c, r in own4)
    assert len({c for c, _ in own4}) == 3 and len({r for _, r in own4}) == 3  # no sample used twice
    assert own4 == oracle_pairs("own4", right, wrong, ("weak", False), ("greedy", True), random.Random(1))
    # the greedy / weak solution is chosen when right, rejected when wrong, and unpaired when no counterpart exists
    (c, r), = oracle_pairs("greedy", right, wrong, ("weak", False), ("greedy", True), random.Random(0))
    assert (c, r in wrong) == ("greedy", True)
    (c, r), = oracle_pairs("weak", right, wrong, ("weak", False), ("greedy", True), random.Random(0))
    assert (c in right, r) == (True, "weak")
    assert oracle_pairs("weak", [], wrong, ("weak", False), ("greedy", True), random.Random(0)) == []
    assert set(ORACLE_PAIRS) == {"own", "own4", "greedy", "weak"}
    with pytest.raises(ValueError, match="expected one of own, own4, greedy, weak"):
        oracle_pairs("gold", right, wrong, ("weak", False), ("greedy", True), random.Random(0))
