"""Stage I: the consistency rule, variant construction, gold isolation and the iteration wiring."""
import pytest

from w2s_nb.config import load_config
from w2s_nb.stage1 import label_examples, select_consistent, stage1_variants, variant_examples
from w2s_nb.data import GoldLeakError, assert_no_gold, icl_prompts

TPL = "Question: {question}\nAnswer:"


def _labels(preds, prefix):
    return [dict(id=f"q{i}", question=f"What is q{i}?", text=f" {prefix}{i}\n#### {p}", pred=p) for i, p in enumerate(preds)]


@pytest.mark.parametrize("weak, icl, agree", [
    ("5", "5", True), ("5", "5.0", True), ("1,000", "1000", True), ("$5", "5", True), ("3", "-3", False),
    ("", "", False), ("5", "", False), ("", "5", False), ("5", "6", False),
])
def test_consistency_rule_edge_cases(weak, icl, agree):
    from w2s_nb.answers import normalize_answer
    sel = select_consistent(_labels([normalize_answer(weak, "gsm8k")], "w"), _labels([normalize_answer(icl, "gsm8k")], "i"))
    assert sel[0]["agree"] is agree


def test_selection_keeps_both_solutions_and_missing_labels_fail():
    sel = select_consistent(_labels(["1", "2"], "w"), _labels(["1", "3"], "i"))
    assert sel[0] == dict(id="q0", question="What is q0?", weak_text=" w0\n#### 1", weak_pred="1",
                          icl_text=" i0\n#### 1", icl_pred="1", cut=False, agree=True)
    with pytest.raises(ValueError, match="ICL labels missing"):
        select_consistent(_labels(["1", "2"], "w"), _labels(["1"], "i"))


def test_variants_hybrid_has_two_examples_per_kept_question():
    sel = select_consistent(_labels(["1", "2", "3"], "w"), _labels(["1", "9", "3"], "i"))
    hyb = variant_examples(sel, "hybrid", TPL)
    assert len(hyb) == 4
    assert [e["completion"] for e in hyb] == [" w0\n#### 1", " i0\n#### 1", " w2\n#### 3", " i2\n#### 3"]
    assert hyb[0]["prompt"] == hyb[1]["prompt"] == "Question: What is q0?\nAnswer:"
    assert [e["completion"] for e in variant_examples(sel, "weak", TPL)] == [" w0\n#### 1", " w2\n#### 3"]
    assert [e["completion"] for e in variant_examples(sel, "icl", TPL)] == [" i0\n#### 1", " i2\n#### 3"]
    assert len(label_examples(_labels(["1", "", "3"], "w"), TPL)) == 3


def test_gold_isolation():
    with pytest.raises(GoldLeakError, match=r"carries gold field\(s\) \['answer', 'solution'\]"):
        assert_no_gold([dict(id="q", question="?", solution="s", answer="1")], "x")
    leaky = [dict(s, answer="1") for s in select_consistent(_labels(["1"], "w"), _labels(["1"], "i"))]
    with pytest.raises(GoldLeakError):
        variant_examples(leaky, "hybrid", TPL)
    with pytest.raises(GoldLeakError):
        label_examples([dict(id="q", question="?", text="t", pred="1", solution="gold")], TPL)


def test_icl_prompt_uses_weak_demos_verbatim():
    p = icl_prompts([dict(id="x", question="What is 3 + 4?")], [dict(question="What is 2 + 2?", solution="2 + 2 = 5\n#### 5")], TPL)
    assert p[0]["id"] == "x"
    assert "2 + 2 = 5\n#### 5" in p[0]["prompt"] and p[0]["prompt"].endswith("Question: What is 3 + 4?\nAnswer:")
    assert p[0]["prompt"].index("What is 2 + 2?") < p[0]["prompt"].index("What is 3 + 4?")


def test_round_variants():
    cfg = load_config(overrides={"stage1.rounds": 2, "stage1.variants": ["hybrid"]})
    assert stage1_variants(cfg, 1) == ["weak", "icl", "hybrid"]   # round-1 weak/icl models label round 2
    assert stage1_variants(cfg, 2) == ["hybrid"]


def test_olympic_consistency_uses_the_judge():
    sel = select_consistent(_labels(["0.5", "A,C", "3"], "w"), _labels([r"\frac{1}{2}", "[C, A]", "4"], "i"), "olympic")
    assert [s["agree"] for s in sel] == [True, True, False]
    assert [s["agree"] for s in select_consistent(_labels(["0.5"], "w"), _labels([r"\frac{1}{2}"], "i"), "math")] == [False]


def test_label_quality_skips_questions_without_gold():
    from w2s_nb.stage1 import label_quality
    recs = _labels(["1", "2", "3"], "w")
    assert label_quality(recs, {"q0": "1", "q1": "5", "q2": ""}, "pred", "gsm8k") == 0.5
    assert label_quality(recs, {"q0": "", "q1": "", "q2": ""}, "pred", "gsm8k") is None


# ---------------------------------------------------------------- cut solutions (finish "length")

def _finished(labels, finishes):
    return [dict(r, finish=f) for r, f in zip(labels, finishes)]


def test_a_cut_weak_or_icl_label_is_never_kept():
    weak = _finished(_labels(["1", "2", "3", "4"], "w"), ["stop", "length", "stop", None])
    icl = _finished(_labels(["1", "2", "3", "4"], "i"), ["stop", "stop", "length", None])   # None: older records
    sel = select_consistent(weak, icl)
    assert [(s["cut"], s["agree"]) for s in sel] == [(False, True), (True, False), (True, False), (False, True)]
    assert [e["completion"] for e in variant_examples(sel, "hybrid", TPL)] == \
        [" w0\n#### 1", " i0\n#### 1", " w3\n#### 4", " i3\n#### 4"]


def test_full_weak_ft_skips_cut_labels():
    labels = _finished(_labels(["1", "", "3"], "w"), ["length", "stop", None])
    assert [e["completion"] for e in label_examples(labels, TPL)] == [" w1\n####", " w2\n#### 3"]


def test_run_stage1_counts_cut_labels_and_trains_on_complete_ones(tmp_path, monkeypatch):
    import w2s_nb.stage1 as stage1
    from w2s_nb.models import ModelRef
    from w2s_nb.rundir import RunDir
    from w2s_nb.files import atomic_write_jsonl, read_json
    cfg = load_config(overrides={"stage1.rounds": 1, "stage1.ceiling_baseline": False})
    rd = RunDir(tmp_path / "run")
    q = [dict(id=f"q{i}", question=f"What is q{i}?") for i in range(5)]
    atomic_write_jsonl(rd.path("data", "gold2_questions.jsonl"), q)
    atomic_write_jsonl(rd.path("data", "gold2_gold.jsonl"), [dict(id=r["id"], solution="s", answer="1") for r in q])
    atomic_write_jsonl(rd.path("weak", "d_weak.jsonl"),
                       _finished(_labels(["1"] * 5, "w"), ["stop", "length", "stop", "stop", "stop"]))
    atomic_write_jsonl(rd.path("weak", "demos.jsonl"), [dict(id="q0", question="What is q0?", solution="w0\n#### 1")])
    icl_finish = ["stop", "stop", "length", "length", "stop"]
    def generate(ref, mcfg, prompts, sampling, n=1, out_dir=None, **kw):
        return [dict(id=p["id"], prompt=p["prompt"], samples=[f" i{i}\n#### 1"], finish=[icl_finish[i]])
                for i, p in enumerate(prompts)]
    trained = {}
    def train(base, mcfg, examples, out, **kw):
        trained[out.name] = [e["completion"] for e in examples]
        return ModelRef(base=str(base.base), adapters=[str(out)])
    monkeypatch.setattr(stage1, "generate_texts", generate)
    monkeypatch.setattr(stage1, "train_sft", train)
    m = stage1.run_stage1(cfg, rd)
    r1 = m["rounds"][0]
    assert (r1["n_questions"], r1["selected"], r1["weak_cut"], r1["icl_cut"], r1["cut"]) == (5, 2, 1, 2, 3)
    assert trained["hybrid"] == [" w0\n#### 1", " i0\n#### 1", " w4\n#### 1", " i4\n#### 1"]
    assert trained["full_weak"] == [" w0\n#### 1", " w2\n#### 1", " w3\n#### 1", " w4\n#### 1"]
    assert (m["full_weak_examples"], m["full_weak_cut"]) == (4, 1)
    assert read_json(rd.path("stage1", "round1", "metrics.json")) == r1
