import dataclasses
"""Evaluation: Wilson CI, pass@k, majority vote, scoring, PGR, and run_eval on a run directory."""
import json
import math

import pytest

import w2s_nb.sample
from w2s_nb.config import EvalConfig, ModelConfig, RunConfig, SamplingConfig
from w2s_nb.eval import (accuracy_by_difficulty, add_pgr, difficulty, majority_answer, run_eval, run_models,
                         score_predictions, solution_lines, summarize)
from w2s_nb.stats import mcnemar, paired_counts, pass_at_k, pgr, wilson_interval
from w2s_nb.rundir import RunDir
from w2s_nb.files import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl


# ---------------------------------------------------------------- accuracy and CI
def test_wilson_interval_8_of_10_matches_hand_computation():
    # z = 1.959964; p = 0.8; denom = 1 + z^2/10 = 1.384146; centre = (0.8 + z^2/20) / denom = 0.716735
    # half = z * sqrt(0.8*0.2/10 + z^2/400) / denom = 0.226572  ->  [0.490162, 0.943318]
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-6)
    assert hi == pytest.approx(0.943318, abs=1e-6)


def test_wilson_interval_edges_and_errors():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-6)
    assert wilson_interval(20, 20)[1] == 1.0
    lo90, hi90 = wilson_interval(8, 10, level=0.90)
    assert 0.490162 < lo90 and hi90 < 0.943318  # a 90% interval is narrower
    for bad in [(1, 0), (11, 10), (-1, 10)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_summarize_greedy_rows():
    rows = [dict(id=i, correct=i < 8) for i in range(10)]
    s = summarize(rows)
    assert (s["accuracy"], s["correct"], s["n"], s["majority_n"], s["pass_at_n"]) == (0.8, 8, 10, 1, None)
    assert s["ci95"] == pytest.approx([0.490162, 0.943318], abs=1e-6)
    with pytest.raises(ValueError, match="no result rows"):
        summarize([])


# ---------------------------------------------------------------- pass@k
def _codex_pass_at_k(n, c, k):
    "The numerically stable form from Chen et al. (2021), for comparison."
    if n - c < k: return 1.0
    p = 1.0
    for i in range(n - c + 1, n + 1): p *= 1 - k / i
    return 1 - p


def test_pass_at_k_known_numbers():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)          # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)         # pass@1 = c/n
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    for n, c, k in [(20, 7, 3), (100, 13, 10), (7, 6, 2), (10, 3, 8)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(_codex_pass_at_k(n, c, k))
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


# ---------------------------------------------------------------- majority vote and scoring
def test_majority_answer_ignores_empty_and_breaks_ties_by_first_seen():
    assert majority_answer(["7", "", "", "", "8", "8"]) == ("8", 2)
    assert majority_answer(["8", "7", "7", "8"]) == ("8", 2)
    assert majority_answer(["", ""]) == ("", 0)


def test_score_predictions_greedy():
    gold = {"a": "42", "b": "1,000", "c": "3"}
    recs = [dict(id="a", samples=["6 * 7 = 42\n#### 42"]), dict(id="b", samples=["#### 1000"]),
            dict(id="c", samples=["no idea"])]
    rows = score_predictions(recs, gold, "gsm8k")
    assert [r["correct"] for r in rows] == [True, True, False]
    assert rows[0] == dict(id="a", prediction="6 * 7 = 42\n#### 42", extracted="42", gold="42", correct=True)
    assert rows[2]["extracted"] == ""
    assert "answers" not in rows[0]


def test_score_predictions_majority_and_pass_at_n():
    gold = {"a": {"answer": "4"}, "b": {"answer": "10"}}  # whole test records work as gold too
    recs = [dict(id="a", samples=["#### 5", "#### 4", "#### 4", "#### 5", "#### 5"]),  # majority 5 (wrong), 2 right
            dict(id="b", samples=["#### 10", "", "#### 9", "#### 10.0", "The answer is 10"])]
    rows = score_predictions(recs, gold, "gsm8k")
    assert rows[0]["extracted"] == "5" and rows[0]["correct"] is False and rows[0]["n_correct"] == 2
    assert rows[0]["prediction"] == "#### 5"
    assert rows[1]["extracted"] == "10" and rows[1]["correct"] is True and rows[1]["n_correct"] == 3
    s = summarize(rows)
    assert (s["correct"], s["majority_n"]) == (1, 5)
    assert s["pass_at_n"] == 1.0
    assert s["pass_at_k"][1] == pytest.approx((2 / 5 + 3 / 5) / 2)


def test_score_predictions_math_format():
    rows = score_predictions([dict(id="q", samples=["So x = 1/2. The answer is: \\frac{1}{2}"])], {"q": "\\frac12"}, "math")
    assert rows[0]["correct"] is True


def test_score_predictions_bad_input():
    with pytest.raises(ValueError, match="no gold answer"):
        score_predictions([dict(id="x", samples=["#### 1"])], {"a": "1"}, "gsm8k")
    with pytest.raises(ValueError, match="given twice"):
        score_predictions([dict(id="a", samples=["#### 1"])] * 2, {"a": "1"}, "gsm8k")
    with pytest.raises(ValueError, match="non-empty list"):
        score_predictions([dict(id="a", samples=[])], {"a": "1"}, "gsm8k")
    with pytest.raises(ValueError, match="different numbers of samples"):
        summarize([dict(correct=True, answers=["1", "1"], n_correct=2), dict(correct=True, answers=["1"], n_correct=1)])


# ---------------------------------------------------------------- PGR
def test_pgr_arithmetic():
    assert pgr(0.5, 0.3, 0.7).value == pytest.approx(0.5)
    assert pgr(0.2, 0.3, 0.7).value == pytest.approx(-0.25)   # worse than the weak floor: negative
    assert pgr(0.8, 0.3, 0.7).value == pytest.approx(1.25)    # beyond the ceiling: above 1
    assert pgr(0.56, 0.252, 0.80).value == pytest.approx(0.308 / 0.548)
    assert pgr(0.5, 0.3, 0.7).reason is None


def test_pgr_undefined_when_ceiling_does_not_beat_floor():
    for ceiling in (0.4, 0.3):  # equal or below the floor
        r = pgr(0.5, 0.4, ceiling)
        assert r.value is None and "does not beat the weak floor" in r.reason
    assert pgr(0.5, None, 0.7) == (None, "no weak-floor accuracy")
    assert pgr(0.5, 0.3, None) == (None, "no strong-ceiling accuracy")


def test_add_pgr_per_model():
    ms = {"weak": dict(accuracy=0.2), "s1": dict(accuracy=0.5), "ceiling": dict(accuracy=0.8)}
    add_pgr(ms)
    assert (ms["weak"]["pgr"], ms["ceiling"]["pgr"]) == (None, None)
    assert ms["s1"]["pgr"] == pytest.approx(0.5)
    ms["ceiling"]["accuracy"] = 0.1
    assert add_pgr(ms)["s1"]["pgr"] is None
    assert add_pgr({"weak": dict(accuracy=0.2), "s1": dict(accuracy=0.5)})["s1"]["pgr"] is None  # no ceiling model


# ---------------------------------------------------------------- run_eval on a run directory
TEST = [dict(id=f"t{i}", question=f"What is {i} plus {i}?", solution=f"{i} + {i} = {2 * i}.", answer=str(2 * i)) for i in range(3)]
DEMOS = [dict(id=f"d{i}", question=f"What is {i} plus 1?", solution=f"{i} + 1 = {i + 1}. #### {i + 1}", answer=str(i + 1),
              correct=True) for i in range(4)]


def _entry(base, adapters, role, group, label, round=None, variant=None, method=None, **extra):
    return dict(ref=dict(base=base, adapters=adapters, gguf_file=None), role=role, group=group, round=round,
                variant=variant, method=method, label=label, **extra)


def _run_dir(tmp_path, base, with_stage2=False, adapters=True):
    "A run directory after the stages (models.json files, demos, test split); `adapters=False`: every model is `base`."
    ad = (lambda *a: list(a)) if adapters else (lambda *a: [])
    rd = RunDir(tmp_path / "run")
    atomic_write_jsonl(rd.path("data", "test.jsonl"), TEST)
    atomic_write_jsonl(rd.path("weak", "demos.jsonl"), DEMOS)
    atomic_write_json(rd.path("weak", "models.json"), {"weak": _entry(base, ad("weak/model/adapter"), "weak", "weak_floor", "weak")})
    hybrid = _entry(base, ad("stage1/round1/hybrid/adapter"), "strong", "stage1", "Stage I r1 hybrid", round=1, variant="hybrid")
    atomic_write_json(rd.path("stage1", "models.json"), {
        "s1_r1_hybrid": hybrid,
        "m_plus": {**hybrid, "label": "M_plus", "alias_of": "s1_r1_hybrid"},
        "ceiling": _entry(base, ad("stage1/ceiling/adapter"), "strong", "ceiling", "strong ceiling")})
    if with_stage2:
        atomic_write_json(rd.path("stage2", "models.json"), {"m_pro_dpo": _entry(
            base, ad("stage1/round1/hybrid/adapter", "stage2/dpo/adapter"), "strong", "stage2", "M_pro (DPO)", method="dpo")})
    return rd


def _cfg(path, **eval_kw):
    m = ModelConfig(path=path, finetune="lora", dtype="float32")
    return RunConfig(device="cpu", weak=m, strong=m, eval=EvalConfig(**eval_kw), sampling=SamplingConfig(batch_size=8))


FORMAT_KEYS = {"label", "group", "round", "variant", "method", "accuracy", "correct", "n", "ci95", "pgr", "pass_at_n", "majority_n",
               "by_difficulty", "n_cut"}


def test_run_eval_with_a_real_tiny_model(tmp_path, tiny_model_dir):
    """Every listed model (no alias) plus weak-ICL is evaluated for real; files follow the run-directory layout
    (nbs/02_rundir.ipynb)."""
    rd = _run_dir(tmp_path, tiny_model_dir, adapters=False)
    m = run_eval(_cfg(tiny_model_dir, max_new_tokens=4), rd)
    assert m == read_json(rd.path("eval", "metrics.json"))
    assert set(m) == {"answer_format", "n_test", "models", "weak_floor", "ceiling", "difficulty"}
    assert (m["answer_format"], m["n_test"], m["weak_floor"], m["ceiling"]) == ("gsm8k", 3, "weak", "ceiling")
    assert m["difficulty"] == "gold solution lines"  # every TEST solution is one line
    assert list(m["models"]) == ["weak", "weak_icl", "s1_r1_hybrid", "ceiling"]
    for name, e in m["models"].items():
        assert set(e) == FORMAT_KEYS, name
        assert e["n"] == 3 and e["majority_n"] == 1 and e["pass_at_n"] is None
        rows = read_jsonl(rd.path("eval", f"{name}.jsonl"))
        assert [r["id"] for r in rows] == ["t0", "t1", "t2"]
        assert set(rows[0]) == {"id", "prediction", "extracted", "gold", "correct", "n_cut"}
        samples = w2s_nb.sample.read_shards(rd.path("eval", "samples", name))
        assert [r["n_cut"] for r in rows] == [samples[r["id"]]["finish"].count("length") for r in rows]
        assert e["n_cut"] == sum(r["n_cut"] for r in rows)  # samples cut by max_new_tokens=4
        assert e["correct"] == sum(r["correct"] for r in rows)
        assert e["by_difficulty"] == [dict(difficulty=1, accuracy=e["accuracy"], correct=e["correct"], n=3, ci95=e["ci95"])]
    assert m["models"]["weak_icl"]["group"] == "weak_icl"
    # an untrained random model: every model scores the same, so the ceiling does not beat the floor
    assert all(e["pgr"] is None for e in m["models"].values())
    # weak-ICL prompts are 4-shot with the weak demos; the others zero-shot
    icl = w2s_nb.sample.read_shards(rd.path("eval", "samples", "weak_icl"))["t0"]["prompt"]
    assert icl.count("Question:") == 5 and DEMOS[3]["solution"] in icl
    assert w2s_nb.sample.read_shards(rd.path("eval", "samples", "weak"))["t0"]["prompt"] == "Question: What is 0 plus 0?\nAnswer:"


def _fake_generate(calls):
    "A sampler stand-in whose accuracy depends on the model: ceiling 3/3, hybrid 2/3, DPO 3/3, weak 1/3, base 0/3."
    right = {"ceiling": 3, "hybrid": 2, "dpo": 3, "weak": 1}
    def gen(ref, cfg, prompts, sampling, n=1, temperature=0.0, top_p=1.0, seed=0, device="cpu", out_dir=None,
            num_processes=1, accelerate_config=None, engine=None, timeout_s=None):
        calls.append(dict(adapters=list(ref.adapters), n=n, temperature=temperature, max_new_tokens=sampling.max_new_tokens,
                          timeout_s=timeout_s))
        k = next((v for key, v in right.items() if ref.adapters and key in ref.adapters[-1]), 0)
        return [dict(id=p["id"], prompt=p["prompt"], samples=[f"#### {2 * int(p['id'][1:]) + (i >= k)}"] * n)
                for i, p in enumerate(prompts)]
    return gen


def test_run_eval_pgr_resume_and_settings_change(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(w2s_nb.sample, "generate_texts", _fake_generate(calls))
    rd = _run_dir(tmp_path, str(tmp_path / "strong_base"), with_stage2=True)
    m = run_eval(_cfg(str(tmp_path / "strong_base"), max_new_tokens=7), rd)
    assert list(m["models"]) == ["weak", "weak_icl", "s1_r1_hybrid", "ceiling", "m_pro_dpo"]
    acc = {k: v["accuracy"] for k, v in m["models"].items()}
    assert acc == pytest.approx(dict(weak=1 / 3, weak_icl=0.0, s1_r1_hybrid=2 / 3, ceiling=1.0, m_pro_dpo=1.0))
    pgrs = {k: v["pgr"] for k, v in m["models"].items()}
    assert pgrs == pytest.approx(dict(weak=None, weak_icl=-0.5, s1_r1_hybrid=0.5, ceiling=None, m_pro_dpo=1.0))
    assert m["models"]["m_pro_dpo"]["method"] == "dpo" and m["models"]["s1_r1_hybrid"]["round"] == 1
    assert len(calls) == 5 and {c["max_new_tokens"] for c in calls} == {7} and {c["temperature"] for c in calls} == {0.0}
    assert {c["timeout_s"] for c in calls} == {6 * 3600}  # the run's dist_timeout_s reaches every sampling launch
    assert {e["n_cut"] for e in m["models"].values()} == {None}  # the fake sampler records no finish: unknown
    # resume: results exist for the same inputs, so nothing is generated again
    assert run_eval(_cfg(str(tmp_path / "strong_base"), max_new_tokens=7), rd) == m and len(calls) == 5
    # other settings: everything is evaluated again (majority vote of 3 at eval.temperature)
    cfg3 = dataclasses.replace(_cfg(str(tmp_path / "strong_base"), max_new_tokens=7, n=3, temperature=0.5), dist_timeout_s=60)
    m3 = run_eval(cfg3, rd)
    assert len(calls) == 10 and {(c["n"], c["temperature"], c["timeout_s"]) for c in calls[5:]} == {(3, 0.5, 60)}
    assert all(e["majority_n"] == 3 and e["pass_at_n"] == e["accuracy"] for e in m3["models"].values())
    assert len(read_jsonl(rd.path("eval", "ceiling.jsonl"))[0]["answers"]) == 3


def test_run_eval_accuracy_by_difficulty(tmp_path, monkeypatch):
    """Test questions of 1, 2 and 2 solution lines: by_difficulty splits each model's rows by them (fake sampler: weak gets
    t0 right, the hybrid t0 and t1, the ceiling all three)."""
    monkeypatch.setattr(w2s_nb.sample, "generate_texts", _fake_generate([]))
    rd = _run_dir(tmp_path, str(tmp_path / "strong_base"))
    test = [dict(r, solution=r["solution"] + "\nSo it is that." * (i > 0)) for i, r in enumerate(TEST)]
    atomic_write_jsonl(rd.path("data", "test.jsonl"), test)
    m = run_eval(_cfg(str(tmp_path / "strong_base")), rd)
    by = {k: [(d["difficulty"], d["correct"], d["n"]) for d in v["by_difficulty"]] for k, v in m["models"].items()}
    assert by == dict(weak=[(1, 1, 1), (2, 0, 2)], weak_icl=[(1, 0, 1), (2, 0, 2)], s1_r1_hybrid=[(1, 1, 1), (2, 1, 2)],
                      ceiling=[(1, 1, 1), (2, 2, 2)])
    assert m["models"]["s1_r1_hybrid"]["by_difficulty"][1]["ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert read_json(rd.path("eval", "metrics.json"))["difficulty"] == "gold solution lines"


# ---------------------------------------------------------------- difficulty
def test_difficulty_is_math_level_or_gold_solution_lines():
    assert solution_lines("A has 3.\nShe buys 2, so 3 + 2 = 5.\n\n  \n#### 5\nstray") == 2  # blank lines and #### tail ignored
    assert solution_lines("one\ntwo\nthree") == 3 and solution_lines("") == 0
    world = "Max has 4 packs of 4 beads, so he has 4 * 4 = 16 beads.\nFirst, he gives away 6 beads, so he has 16 - 6 = 10 beads."
    assert difficulty(dict(solution=world), "gsm8k") == 2          # the world: opening line + one step
    assert difficulty(dict(solution=""), "gsm8k") is None
    assert difficulty(dict(level=5, solution="a\nb"), "math") == 5  # MATH: the level, not the lines
    assert difficulty(dict(level=None, solution="a"), "math") is None
    assert difficulty(dict(solution="a"), "olympic") is None


def test_accuracy_by_difficulty_groups_and_skips_unknown():
    rows = [dict(id=i, correct=c) for i, c in enumerate([True, False, True, True, False, True])]
    by = accuracy_by_difficulty(rows, {0: 3, 1: 1, 2: 3, 3: None, 4: 3, 5: 1})
    assert [(d["difficulty"], d["correct"], d["n"], d["accuracy"]) for d in by] == [(1, 1, 2, 0.5), (3, 2, 3, 2 / 3)]
    assert by[1]["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    with pytest.raises(ValueError, match="no difficulty for it"):
        accuracy_by_difficulty([dict(id="x", correct=True)], {})


# ---------------------------------------------------------------- paired test
def test_mcnemar_exact_known_values():
    assert mcnemar(0, 6) == 0.03125                            # 2 * 0.5**6
    assert mcnemar(6, 0) == 0.03125
    assert mcnemar(1, 1) == 1.0 and mcnemar(0, 0) == 1.0
    assert mcnemar(2, 10) == pytest.approx(0.0385742188, abs=1e-10)  # 2 * (1 + 12 + 66) / 4096
    assert mcnemar(3, 5) == 0.7265625                          # 2 * (1 + 8 + 28 + 56) / 256
    assert mcnemar(0, 1) == 1.0
    assert mcnemar(100, 140) == pytest.approx(0.0116641, abs=1e-7)  # large counts: exact (chi-squared with continuity: 0.0118)
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def test_paired_counts_and_mismatched_questions():
    a = [dict(id="q1", correct=True), dict(id="q2", correct=True), dict(id="q3", correct=False), dict(id="q4", correct=False)]
    b = [dict(id="q4", correct=True), dict(id="q3", correct=False), dict(id="q2", correct=True), dict(id="q1", correct=False)]
    assert paired_counts(a, b) == (1, 1)  # q1 only in a, q4 only in b; order does not matter
    assert paired_counts(b, a) == (1, 1) and paired_counts(a, a) == (0, 0)
    with pytest.raises(ValueError, match=r"same questions: 1 id\(s\) only in the first model's rows \(e.g. 'q4'\), 0 only"):
        paired_counts(a, a[:3])
    with pytest.raises(ValueError, match="'q1' appears twice in the second"):
        paired_counts(a, a + a[:1])


def test_run_models_skips_aliases_and_run_eval_needs_inputs(tmp_path):
    rd = _run_dir(tmp_path, str(tmp_path / "strong_base"))
    assert list(run_models(rd)) == ["weak", "s1_r1_hybrid", "ceiling"]
    rd.path("data", "test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="test split"):
        run_eval(_cfg(str(tmp_path / "strong_base")), rd)


def test_run_eval_scores_the_models_of_one_base_with_one_vllm_engine(tmp_path, tiny_model_dir, monkeypatch):
    """sampling.backend vllm (the stand-in engine of tests/test_sample.py): the strong models over the strong base
    (weak-ICL, the Stage I model, the ceiling) share one engine with a LoRA slot per adapter; the weak model's base is
    another engine, shut down before the strong one starts; a model of two adapters (DPO over the Stage I adapter) gets
    a merged copy and an engine of its own. A resumed evaluation starts no engine."""
    import json as _json
    from pathlib import Path
    from test_sample import fake_vllm
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    def save_merged(ref, cfg, target):
        Path(target).mkdir(parents=True); (Path(target) / "config.json").write_text("{}")
    monkeypatch.setattr(S, "save_merged", save_merged)
    rd = _run_dir(tmp_path, tiny_model_dir, with_stage2=True)
    for a in ("weak/model/adapter", "stage1/round1/hybrid/adapter", "stage1/ceiling/adapter", "stage2/dpo/adapter"):
        rd.path(a).mkdir(parents=True)
        (rd.path(a) / "adapter_config.json").write_text(_json.dumps({"r": 8}))
    cfg = _cfg(tiny_model_dir, max_new_tokens=4)
    cfg.sampling.backend = "vllm"
    m = run_eval(cfg, rd)
    assert list(m["models"]) == ["weak", "weak_icl", "s1_r1_hybrid", "ceiling", "m_pro_dpo"]  # stage order kept
    assert [c[0] for c in calls] == ["LLM", "generate", "engine_core.shutdown",              # weak base: weak
                                     "LLM", "generate", "generate", "generate", "engine_core.shutdown",  # strong base
                                     "LLM", "generate", "engine_core.shutdown"]               # DPO's merged copy
    engines = [c[1] for c in calls if c[0] == "LLM"]
    assert [e.get("max_loras") for e in engines] == [1, 2, None]
    strong = [c[2] for c in calls[4:7]]
    assert strong[0] is None and [r.lora_path for r in strong[1:]] == [str(rd.path("stage1/round1/hybrid/adapter")),
                                                                        str(rd.path("stage1/ceiling/adapter"))]
    assert engines[2]["model"].endswith("merged-model")
    calls.clear()
    assert run_eval(cfg, rd) == m and calls == []                    # every result exists: no engine started
