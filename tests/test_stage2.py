"""Stage II: confidence, both pair rules and their thresholds, skips, the cap, seeded choice, gold isolation."""
import pytest

from w2s_nb.config import Stage2Config
from w2s_nb.data import GoldLeakError
from w2s_nb.stage2 import build_pairs, majority, pair_quality, question_pairs

S = [f"s{i}" for i in range(10)]
WEAK = dict(id="q", text="WEAK", pred="5")


def pairs(preds, weak_pred="5", seed=0, **kw):
    return question_pairs(dict(WEAK, pred=weak_pred), S, preds, Stage2Config(**kw), seed)


@pytest.mark.parametrize("answers, expected", [
    (["3"] * 6 + ["4"] * 4, ("3", 0.6)),
    (["", "", "7"], ("7", 1 / 3)),          # empty answers count in the denominator
    (["4", "3", "3", "4"], ("4", 0.5)),     # ties: the earliest
    ([""] * 3, ("", 0.0)),
])
def test_confidence(answers, expected):
    a, c = majority(answers)
    assert a == expected[0] and c == pytest.approx(expected[1])


def test_weak_agrees_rule():
    p, why = pairs(["5"] * 6 + ["6"] * 4)                 # confidence 0.6 == tau: used
    assert why == "" and len(p) == 1
    assert p[0]["chosen"] == "WEAK" and p[0]["rejected"] in S[6:] and p[0]["kind"] == "weak_chosen"
    assert pairs(["5"] * 10) == ([], "no_rejected")


def test_weak_disagrees_rule_and_tau_high():
    p, why = pairs(["7"] * 8 + ["6"] * 2)                 # confidence 0.8 == tau_high: weak rejected
    assert p[0]["rejected"] == "WEAK" and p[0]["chosen"] in S[:8] and p[0]["kind"] == "weak_rejected"
    assert pairs(["7"] * 7 + ["6"] * 3) == ([], "below_tau_high")
    assert pairs(["7"] * 7 + ["6"] * 3, tau_high=0.7)[0][0]["rejected"] == "WEAK"


def test_skip_cases():
    assert pairs(["5"] * 5 + ["6"] * 5) == ([], "low_confidence")
    assert pairs(["5"] * 5 + ["6"] * 5, tau=0.5)[1] == ""
    assert pairs([""] * 10) == ([], "empty_majority")


def test_cap_and_distinct_samples():
    p, _ = pairs(["5"] * 7 + ["6"] * 3, pairs_per_question=3)
    assert len(p) == 3 and len({x["rejected"] for x in p}) == 3
    p, _ = pairs(["5"] * 8 + ["6"] * 2, pairs_per_question=3)
    assert len(p) == 2                                    # only two disagreeing samples exist
    p, _ = pairs(["7"] * 9 + ["6"], pairs_per_question=2)
    assert len(p) == 2 and len({x["chosen"] for x in p}) == 2 and all(x["rejected"] == "WEAK" for x in p)


def test_seeded_choice_is_deterministic():
    preds = ["5"] * 6 + ["6"] * 4
    runs = {pairs(preds, seed=s)[0][0]["rejected"] for s in range(20)}
    assert pairs(preds, seed=3) == pairs(preds, seed=3)
    assert len(runs) > 1                                  # the seed matters


def test_strong_only_ablation():
    p, _ = pairs(["7"] * 8 + ["6"] * 2, pair_source="strong")
    assert p[0]["kind"] == "strong" and p[0]["chosen"] in S[:8] and p[0]["rejected"] in S[8:]
    assert "WEAK" not in (p[0]["chosen"], p[0]["rejected"])


def test_build_pairs_end_to_end_and_quality():
    d_weak = [dict(id="a", question="What is 2 + 3?", text=" 2 + 3 = 5\n#### 5", pred="5"),
              dict(id="b", question="What is 2 * 4?", text=" 2 * 4 = 6\n#### 6", pred="6"),
              dict(id="c", question="What is 9 - 1?", text=" 9 - 1 = 8\n#### 8", pred="8")]
    sampled = [dict(id="a", samples=[" 5\n#### 5"] * 7 + [" 6\n#### 6"] * 3),
               dict(id="b", samples=[" 8\n#### 8"] * 9 + [" 6\n#### 6"]),
               dict(id="c", samples=[" 1\n#### 1"] * 5 + [" 8\n#### 8"] * 5)]
    conf, prs, skipped = build_pairs(d_weak, sampled, Stage2Config(), "gsm8k", "Question: {question}\nAnswer:", seed=0)
    assert [c["confidence"] for c in conf] == [0.7, 0.9, 0.5]
    assert skipped == {"paired": 2, "low_confidence": 1}
    assert [(p["id"], p["kind"]) for p in prs] == [("a", "weak_chosen"), ("b", "weak_rejected")]
    assert prs[0]["prompt"] == "Question: What is 2 + 3?\nAnswer:" and prs[0]["chosen"] == " 2 + 3 = 5\n#### 5"
    assert pair_quality(prs, {"a": "5", "b": "8"}, "gsm8k") == dict(chosen_correct=1.0, rejected_wrong=1.0)
    assert pair_quality(prs, {"a": "6", "b": "6"}, "gsm8k") == dict(chosen_correct=0.0, rejected_wrong=0.0)
    with pytest.raises(GoldLeakError):
        build_pairs([dict(d_weak[0], answer="5")], sampled[:1], Stage2Config(), "gsm8k", "Question: {question}\nAnswer:", seed=0)


def test_math_weak_rejected_pairs_have_distinct_texts_in_the_papers_order():
    texts = ["a", "a", "b", "a", "c", "d", "a", "b", "x", "y"]                 # the model repeats itself
    weak = dict(WEAK, pred="4")
    for seed in range(10):
        p, _ = question_pairs(weak, texts, ["5"] * 8 + ["6"] * 2, Stage2Config(pairs_per_question=3), seed)
        chosen = [x["chosen"] for x in p]
        assert len(chosen) == 3 == len(set(chosen)) and all(x["rejected"] == "WEAK" for x in p)
        rest = [t for t in dict.fromkeys(texts[:8]) if t != chosen[0]]         # then the next distinct ones, in order
        assert chosen[1:] == rest[:2]
    p, _ = question_pairs(weak, ["a"] * 8 + ["x", "y"], ["5"] * 8 + ["6"] * 2, Stage2Config(pairs_per_question=3), 0)
    assert [x["chosen"] for x in p] == ["a"]                                  # one distinct text: one pair
    p, _ = question_pairs(weak, texts, ["5"] * 8 + ["6"] * 2, Stage2Config(pairs_per_question=1), 0)
    assert len(p) == 1                                                       # GSM8K: one pair


def test_build_pairs_reads_answers_by_the_strict_rule():
    d_weak = [dict(id="a", question="What is 2 + 3?", text=" 2 + 3 = 5\n#### 5", pred="5")]
    # six samples end without an answer line (cut off): empty votes under the paper's rule
    sampled = [dict(id="a", samples=[" 2 + 3 = 5\n#### 5"] * 4 + [" 2 + 3 = 5 and then"] * 6)]
    conf, prs, skipped = build_pairs(d_weak, sampled, Stage2Config(), "gsm8k", "Question: {question}\nAnswer:", seed=0)
    assert conf[0]["confidence"] == 0.4 and skipped == {"low_confidence": 1} and prs == []
    conf, prs, skipped = build_pairs(d_weak, sampled, Stage2Config(), "gsm8k", "Question: {question}\nAnswer:", 0, rule="lenient")
    assert conf[0]["confidence"] == 1.0 and skipped == {"no_rejected": 1}


def test_build_pairs_groups_olympic_votes_by_the_judge():
    d_weak = [dict(id="a", question="Q", text=r" so $\boxed{0.5}$", pred="0.5")]
    sampled = [dict(id="a", samples=[r" $\boxed{\frac{1}{2}}$"] * 6 + [r" $\boxed{2}$"] * 4)]
    conf, prs, _ = build_pairs(d_weak, sampled, Stage2Config(), "olympic", "{question}\n\nAnswer:", seed=0)
    assert conf[0]["confidence"] == 0.6 and [p["kind"] for p in prs] == ["weak_chosen"] and prs[0]["rejected"].endswith("{2}$")


# ---------------------------------------------------------------- cut samples (finish "length")

TPL = "Question: {question}\nAnswer:"


def test_cut_samples_vote_but_are_never_chosen_or_rejected():
    d_weak = [dict(id="a", question="What is 2 + 3?", text=" 2 + 3 = 5\n#### 5", pred="5", finish="stop")]
    texts = [f" 5 ({i})\n#### 5" for i in range(6)] + [f" 6 ({i})\n#### 6" for i in range(4)]
    finish = ["stop"] * 6 + ["length", "length", "length", "stop"]             # three of the four dissenters were cut
    for seed in range(10):
        sampled = [dict(id="a", samples=texts, finish=finish)]
        conf, prs, skipped = build_pairs(d_weak, sampled, Stage2Config(), "gsm8k", TPL, seed)
        assert conf[0]["confidence"] == 0.6 and conf[0]["n_cut"] == 3 and conf[0]["weak_cut"] is False   # all ten vote
        assert [(p["chosen"], p["rejected"]) for p in prs] == [(" 2 + 3 = 5\n#### 5", " 6 (3)\n#### 6")]
    conf, prs, skipped = build_pairs(d_weak, [dict(id="a", samples=texts, finish=["stop"] * 6 + ["length"] * 4)],
                                     Stage2Config(), "gsm8k", TPL, 0)
    assert prs == [] and skipped == {"cut": 1}                                  # only cut samples disagree
    conf, prs, skipped = build_pairs(d_weak, [dict(id="a", samples=texts)], Stage2Config(), "gsm8k", TPL, 0)
    assert len(prs) == 1 and conf[0]["n_cut"] == 0                              # no finish (older records): complete


def test_weak_rejected_chosen_among_complete_samples():
    d_weak = [dict(id="b", question="What is 2 * 4?", text=" 2 * 4 = 6\n#### 6", pred="6", finish="stop")]
    texts = [f" 8 ({i})\n#### 8" for i in range(9)] + [" 6\n#### 6"]
    finish = ["length"] * 8 + ["stop", "stop"]
    for seed in range(10):
        _, prs, _ = build_pairs(d_weak, [dict(id="b", samples=texts, finish=finish)],
                                Stage2Config(pairs_per_question=3), "gsm8k", TPL, seed)
        assert [(p["kind"], p["chosen"]) for p in prs] == [("weak_rejected", " 8 (8)\n#### 8")]
    sampled = [dict(id="b", samples=texts, finish=["length"] * 9 + ["stop"])]
    _, prs, skipped = build_pairs(d_weak, sampled, Stage2Config(), "gsm8k", TPL, 0)
    assert prs == [] and skipped == {"cut": 1}


def test_a_cut_weak_solution_is_never_chosen_or_rejected():
    texts = [" 5\n#### 5"] * 9 + [" 6\n#### 6"]
    for weak_pred, kind in [("5", "weak_chosen"), ("7", "weak_rejected")]:
        d_weak = [dict(id="c", question="Q?", text=f" ... #### {weak_pred}", pred=weak_pred)]
        _, prs, _ = build_pairs(d_weak, [dict(id="c", samples=texts)], Stage2Config(), "gsm8k", TPL, 0)
        assert [p["kind"] for p in prs] == [kind]                               # complete: paired
        conf, prs, skipped = build_pairs([dict(d_weak[0], finish="length")], [dict(id="c", samples=texts)],
                                         Stage2Config(), "gsm8k", TPL, 0)
        assert prs == [] and skipped == {"cut": 1} and conf[0]["weak_cut"] is True
    p, why = question_pairs(dict(WEAK, finish="length"), S, ["5"] * 10, Stage2Config(), 0)
    assert (p, why) == ([], "no_rejected")                                      # nothing to reject anyway


def test_strong_only_pairs_skip_cut_samples():
    cut = [i in (0, 1, 2, 3, 4, 5, 6, 7) for i in range(10)]
    p, why = question_pairs(WEAK, S, ["7"] * 8 + ["6"] * 2, Stage2Config(pair_source="strong"), 0, cut)
    assert (p, why) == ([], "cut")                                              # every majority sample was cut
    cut = [i == 9 for i in range(10)]
    p, why = question_pairs(WEAK, S, ["7"] * 8 + ["6"] * 2, Stage2Config(pair_source="strong"), 0, cut)
    assert [(x["chosen"] in S[:8], x["rejected"]) for x in p] == [(True, "s8")] and why == ""


def test_no_cut_leaves_the_pairs_as_they_were():
    for seed in range(5):
        for preds, weak_pred in [(["5"] * 6 + ["6"] * 4, "5"), (["7"] * 9 + ["6"], "5")]:
            cfg = Stage2Config(pairs_per_question=3)
            old = question_pairs(dict(WEAK, pred=weak_pred), S, preds, cfg, seed)
            assert question_pairs(dict(WEAK, pred=weak_pred, finish="stop"), S, preds, cfg, seed, [False] * 10) == old


def test_run_stage2_counts_cut_samples_and_skips(tmp_path, monkeypatch):
    import w2s_nb.stage2 as stage2
    from w2s_nb.config import load_config
    from w2s_nb.models import ModelRef
    from w2s_nb.rundir import RunDir
    from w2s_nb.files import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
    cfg = load_config(overrides={"stage2.n": 10, "stage2.methods": ["dpo"]})
    rd = RunDir(tmp_path / "run")
    d_weak = [dict(id=i, question=f"Q{i}?", text=f" ... #### {a}", pred=a, finish=f)
              for i, a, f in [("a", "5", "stop"), ("b", "5", "length"), ("c", "5", "stop")]]
    atomic_write_jsonl(rd.path("weak", "d_weak.jsonl"), d_weak)
    atomic_write_jsonl(rd.path("data", "gold2_gold.jsonl"), [dict(id=r["id"], answer="5") for r in d_weak])
    atomic_write_json(rd.path("stage1", "models.json"), {"m_plus": dict(ref=dict(base="world:strong", adapters=[]))})
    samples = {"a": ([" #### 5"] * 7 + [" #### 6"] * 3, ["stop"] * 7 + ["length", "stop", "stop"]),
               "b": ([" #### 5"] * 7 + [" #### 6"] * 3, ["stop"] * 10),
               "c": ([" #### 5"] * 7 + [" #### 6"] * 3, ["stop"] * 7 + ["length"] * 3)}
    monkeypatch.setattr(stage2, "generate_texts", lambda ref, mcfg, prompts, *a, **kw: [
        dict(id=p["id"], prompt=p["prompt"], samples=samples[p["id"]][0], finish=samples[p["id"]][1]) for p in prompts])
    trained = []
    def train(m_plus, mcfg, pref, method, pairs, out, **kw):
        trained.extend(pairs)
        return ModelRef(base="world:strong", adapters=[str(out)])
    monkeypatch.setattr(stage2, "train_preference", train)
    m = stage2.run_stage2(cfg, rd)
    assert (m["pairs"], m["samples_cut"], m["weak_cut"]) == (1, 4, 1)
    assert m["skipped"] == dict(low_confidence=0, no_rejected=0, below_tau_high=0, empty_majority=0, cut=2)
    assert [p["rejected"] for p in trained] == [" #### 6"] and read_json(rd.path("stage2", "stage2_metrics.json")) == m
    assert [c["n_cut"] for c in read_jsonl(rd.path("stage2", "confidence.jsonl"))] == [1, 0, 3]
