"""The weak stage: D_weak demonstrations (the paper's choice) and its ablations, a weak model used as is, OlympicArena data."""
from pathlib import Path

import pytest

from w2s_nb.config import ConfigError, Stage1Config, load_config
from w2s_nb.data import answer_format, load_olympicarena, load_pool_and_test, olympic_keep, zero_shot_prompt
from w2s_nb.rundir import RunDir
from w2s_nb.files import read_json, read_jsonl
from w2s_nb.weak import (choose_demo_questions, d_weak_demos, demo_budget, demo_records, fit_demos, icl_prompt_tokens,
                         label_records)

ROOT = Path(__file__).resolve().parent.parent
OLYMPIC_ROWS = ROOT / "tests" / "fixtures" / "olympicarena_rows.jsonl"


def _d_weak(n=12):
    "D_weak records: the weak answer to question i is i (right only for multiples of 3, see `_gold2`)."
    return [dict(id=f"g2-{i}", question=f"What is {i}?", text=f" it is {i}\n#### {i}", pred=str(i)) for i in range(n)]


def _gold2(n=12):
    return [dict(id=f"g2-{i}", question=f"What is {i}?", solution="...", answer=str(i if i % 3 == 0 else i + 1)) for i in range(n)]


# ---------------------------------------------------------------- demonstrations

def test_default_demos_are_d_weak_records_unfiltered():
    s1 = load_config().stage1
    assert (s1.demo_source, s1.demo_choice, s1.n_shots) == ("d_weak", "random", 4)
    demos, passed = d_weak_demos(_d_weak(), _gold2(), s1, seed=0, fmt="gsm8k")
    assert passed == []
    by_id = {r["id"]: r for r in _d_weak()}
    assert len(demos) == 4 and all(d["id"] in by_id for d in demos)                       # D_gold,2 ids, from D_weak
    assert all(d["solution"] == by_id[d["id"]]["text"].strip() and d["answer"] == by_id[d["id"]]["pred"] for d in demos)
    assert [d["correct"] for d in demos] == [int(d["id"].split("-")[1]) % 3 == 0 for d in demos]   # gold only marks them
    assert d_weak_demos(_d_weak(), _gold2(), s1, seed=0, fmt="gsm8k")[0] == demos           # seeded
    other_seeds = {d["id"] for s in range(10) for d in d_weak_demos(_d_weak(), _gold2(), s1, s, "gsm8k")[0]}
    assert other_seeds != {d["id"] for d in demos}


def test_demo_ablations_random_correct_and_fixed():
    right, _ = d_weak_demos(_d_weak(), _gold2(), Stage1Config(demo_choice="correct"), seed=0, fmt="gsm8k")
    assert {d["id"] for d in right} == {"g2-0", "g2-3", "g2-6", "g2-9"} and all(d["correct"] for d in right)
    fixed_cfg = Stage1Config(demo_choice="fixed", demo_ids=["g2-5", "g2-1", "g2-2", "g2-7"])
    fixed, _ = d_weak_demos(_d_weak(), _gold2(), fixed_cfg, 0, "gsm8k")
    assert [d["id"] for d in fixed] == ["g2-5", "g2-1", "g2-2", "g2-7"]
    with pytest.raises(ValueError, match=r"not in D_gold,2 \(d_weak.jsonl\): \['gold1-0'\]"):
        d_weak_demos(_d_weak(), _gold2(), Stage1Config(demo_choice="fixed", demo_ids=["gold1-0", "g2-1", "g2-2", "g2-7"]), 0, "gsm8k")


def test_gold1_option_keeps_the_earlier_choice():
    gold1 = [dict(id=f"g1-{i}", question=f"q{i}", answer=str(i)) for i in range(8)]
    cands = choose_demo_questions(gold1, 4, "random", seed=0, where="D_gold,1")
    labels = [dict(id=c["id"], question=c["question"], text=f" #### {c['answer']}", pred=c["answer"]) for c in cands]
    assert all(d["id"].startswith("g1-") and d["correct"] for d in demo_records(cands, labels, 4, "random", "gsm8k"))
    assert load_config(overrides={"stage1.demo_source": "gold1"}).stage1.demo_source == "gold1"


# ---------------------------------------------------------------- why a sample ended; demonstrations that fit

def test_label_records_keep_why_the_first_sample_ended():
    qs = [dict(id="a", question="A?"), dict(id="b", question="B?"), dict(id="c", question="C?")]
    gen = [dict(id="a", samples=[" 1\n#### 1", "x"], finish=["stop", "length"]),
           dict(id="b", samples=[" 2 + 2 ="], finish=["length"]),
           dict(id="c", samples=[" 3\n#### 3"])]                               # written by older code: no finish
    assert [(r["id"], r["pred"], r["finish"]) for r in label_records(qs, gen, "gsm8k")] == \
        [("a", "1", "stop"), ("b", "", "length"), ("c", "3", None)]


def _words(texts):
    "A stand-in tokenizer: one token a word."
    return {"input_ids": [t.split() for t in texts]}


def test_fit_demos_passes_over_cut_and_too_long_candidates_in_order():
    cands = [dict(id=f"c{i}", finish="length" if i in (1, 5) else "stop", words=30 if i == 3 else 4) for i in range(8)]
    longest = lambda demos: 10 + sum(d["words"] for d in demos)
    demos, passed = fit_demos(cands, 4, longest, budget=30)
    assert [d["id"] for d in demos] == ["c0", "c2", "c4", "c6"]
    assert passed == [dict(id="c1", reason="length"), dict(id="c3", reason="too_long", tokens=48),
                      dict(id="c5", reason="length")]
    assert [d["id"] for d in fit_demos(cands, 4, longest, budget=None)[0]] == ["c0", "c2", "c3", "c4"]  # no context
    assert [d["id"] for d in fit_demos(cands, 4)[0]] == ["c0", "c2", "c3", "c4"]
    seen = []
    def lazy():
        for c in cands: seen.append(c["id"]); yield c
    fit_demos(lazy(), 2, longest, budget=30)
    assert seen == ["c0", "c1", "c2"]                                             # never reads past the last one needed


def test_cut_demo_is_replaced_by_the_next_record_of_a_separately_seeded_order():
    # seed 0 draws g2-6, g2-11, g2-0, g2-4; the rest in its own seeded order starts g2-8, g2-9, g2-2
    s1 = load_config().stage1
    assert [d["id"] for d in d_weak_demos(_d_weak(), _gold2(), s1, 0, "gsm8k")[0]] == ["g2-6", "g2-11", "g2-0", "g2-4"]
    cut = [dict(r, finish="length" if r["id"] in ("g2-11", "g2-8") else "stop") for r in _d_weak()]
    demos, passed = d_weak_demos(cut, _gold2(), s1, 0, "gsm8k")
    assert [d["id"] for d in demos] == ["g2-6", "g2-0", "g2-4", "g2-9"]
    assert passed == [dict(id="g2-11", reason="length"), dict(id="g2-8", reason="length")]
    assert all(d["finish"] == "stop" for d in demos)


def test_demo_that_makes_an_icl_prompt_too_long_is_replaced():
    long = [dict(r, text=r["text"] + " and so on" * 20) if r["id"] == "g2-0" else r for r in _d_weak()]
    questions = [dict(id=r["id"], question=r["question"]) for r in _d_weak()]
    tokens = icl_prompt_tokens(questions, "Question: {question}\nAnswer:", _words)
    # each prompt: 5 words + 10 per demo ("Question: What is i? Answer: it is i #### i"); g2-0 adds 60 more
    assert tokens([]) == 5 and tokens(d_weak_demos(_d_weak(), _gold2(), Stage1Config(), 0, "gsm8k")[0]) == 5 + 4 * 10
    demos, passed = d_weak_demos(long, _gold2(), Stage1Config(), 0, "gsm8k", tokens, budget=5 + 4 * 10)
    assert [d["id"] for d in demos] == ["g2-6", "g2-11", "g2-4", "g2-8"]
    assert passed == [dict(id="g2-0", reason="too_long", tokens=5 + 2 * 10 + 70)]    # with g2-6, g2-11 before it
    demos, passed = d_weak_demos(long, _gold2(), Stage1Config(), 0, "gsm8k", tokens, budget=5 + 3 * 10 + 70)
    assert [d["id"] for d in demos] == ["g2-6", "g2-11", "g2-0", "g2-4"] and passed == []   # it fits: nothing changes


def test_no_fitting_demos_stop_with_what_to_change():
    with pytest.raises(ValueError, match=r"only 2 of 4 weak-ICL demonstrations fit after 12 candidates \(length: 10;.*"
                                         r"lower stage1.n_shots or sampling.max_new_tokens"):
        d_weak_demos([dict(r, finish="length" if i > 1 else "stop") for i, r in enumerate(_d_weak())], _gold2(),
                     Stage1Config(), 0, "gsm8k")
    tokens = icl_prompt_tokens(_d_weak(), "Question: {question}\nAnswer:", _words)
    with pytest.raises(ValueError, match=r"only 1 of 4 .*\(too_long: 11; .*would pass 15 tokens"):
        d_weak_demos(_d_weak(), _gold2(), Stage1Config(), 0, "gsm8k", tokens, budget=15)
    with pytest.raises(ValueError, match=r"or choose other stage1.demo_ids"):
        d_weak_demos([dict(r, finish="length") for r in _d_weak()], _gold2(),
                     Stage1Config(demo_choice="fixed", demo_ids=["g2-1"]), 0, "gsm8k")


def test_demo_budget_reads_the_strong_models_context(monkeypatch):
    import w2s_nb.weak as weak
    cfg = load_config(ROOT / "configs" / "default.yaml", {"sampling.max_new_tokens": 96})
    monkeypatch.setattr(weak, "context_length", lambda ref, mc: 512 if mc is cfg.strong else None)
    monkeypatch.setattr(weak, "load_tokenizer", lambda ref, mc: _words)
    ctx, budget, tokens = demo_budget(cfg, [dict(id="a", question="What is 1?")])
    assert (ctx, budget, tokens([])) == (512, 512 - 96, 5)
    monkeypatch.setattr(weak, "context_length", lambda ref, mc: 96)
    with pytest.raises(ValueError, match=r"sampling.max_new_tokens=96: leaves no room for a prompt in the strong "
                                         r"model's context of 96 tokens"):
        demo_budget(cfg, [])
    monkeypatch.setattr(weak, "context_length", lambda ref, mc: None)
    assert demo_budget(cfg, []) == (None, None, None)                            # unknown: only the length rule


def _fake_sampler(cut_ids, calls):
    "A `generate_texts` stand-in: answers `What is i?` with i; the ids in `cut_ids` hit the token cap."
    def generate(ref, mcfg, prompts, sampling, n=1, out_dir=None, **kw):
        calls.append((out_dir.name, [p["id"] for p in prompts]))
        return [dict(id=p["id"], prompt=p["prompt"], samples=[f" so\n#### {p['id']}"] * n,
                     finish=["length" if p["id"] in cut_ids else "stop"] * n) for p in prompts]
    return generate


def _weak_run(tmp_path, overrides):
    from w2s_nb.data import run_data
    cfg = load_config(ROOT / "configs" / "default.yaml", {"device": "cpu", "data.n_gold1": 24, "data.n_gold2": 24,
                                                         "data.n_test": 8, **overrides})
    rd = RunDir(tmp_path / "run")
    run_data(cfg, rd)
    return cfg, rd


def test_run_weak_replaces_cut_demos_and_records_why(tmp_path, monkeypatch):
    import w2s_nb.weak as weak
    from w2s_nb.data import icl_prompts
    cfg, rd = _weak_run(tmp_path, {"weak.finetune": "none", "data.n_gold1": 0})
    q2 = read_jsonl(rd.path("data", "gold2_questions.jsonl"))
    first = [d["id"] for d in choose_demo_questions(q2, 4, "random", cfg.seed)]          # the draw of the old code
    calls = []
    monkeypatch.setattr(weak, "generate_texts", _fake_sampler({first[1]}, calls))
    monkeypatch.setattr(weak, "context_length", lambda ref, mc: 4096)
    monkeypatch.setattr(weak, "load_tokenizer", lambda ref, mc: _words)
    m = weak.run_weak(cfg, rd)
    d_weak = read_jsonl(rd.path("weak", "d_weak.jsonl"))
    assert [r["finish"] for r in d_weak if r["id"] == first[1]] == ["length"] and m["d_weak_cut"] == 1
    assert m["demo_ids"][:3] == [first[0], first[2], first[3]] and len(m["demo_ids"]) == 4
    assert first[1] not in m["demo_ids"]
    assert (m["demos_replaced"], m["demos_replaced_why"]) == (1, {"length": 1})
    assert m["demos_passed_over"] == [dict(id=first[1], reason="length")]
    assert m["strong_context"] == 4096 and m["max_new_tokens"] == cfg.sampling.max_new_tokens
    prompts = icl_prompts(q2 + read_jsonl(rd.path("data", "test.jsonl")), read_jsonl(rd.path("weak", "demos.jsonl")),
                          cfg.data.prompt_template)
    assert m["icl_prompt_tokens"] == max(len(p["prompt"].split()) for p in prompts)   # longest D_gold,2 / test prompt
    assert [d["id"] for d in read_jsonl(rd.path("weak", "demos.jsonl"))] == m["demo_ids"]


def test_gold1_demos_are_labelled_one_chunk_at_a_time(tmp_path, monkeypatch):
    import w2s_nb.weak as weak
    from w2s_nb.models import base_ref
    cfg, rd = _weak_run(tmp_path, {"stage1.demo_source": "gold1"})
    gold1 = read_jsonl(rd.path("data", "gold1.jsonl"))
    first = [d["id"] for d in choose_demo_questions(gold1, 4, "random", cfg.seed)]
    monkeypatch.setattr(weak, "weak_model", lambda cfg, rd, dev: (base_ref(cfg.weak), "weak model (stand-in)"))
    monkeypatch.setattr(weak, "context_length", lambda ref, mc: None)
    for cut, expected in [(set(), ["d_weak_shards", "demo_shards"]),
                          ({first[0]}, ["d_weak_shards", "demo_shards", "demo_shards_1"])]:
        calls = []
        monkeypatch.setattr(weak, "generate_texts", _fake_sampler(cut, calls))
        m = weak.run_weak(cfg, rd)
        assert [c[0] for c in calls] == expected and calls[1][1] == first        # the draw first, then only if needed
        assert m["demo_ids"] == (first if not cut else first[1:] + [calls[2][1][0]]) and m["demos_replaced"] == len(cut)


# ---------------------------------------------------------------- the weak model used as is

@pytest.mark.parametrize("override, message", [
    ({"data.n_gold1": 0}, "data.n_gold1=0: expected weak.finetune='none'"),
    ({"strong.finetune": "none"}, "strong.finetune='none': expected qlora, lora or full"),
    ({"data.n_gold1": 0, "weak.finetune": "none", "stage1.demo_source": "gold1"}, "stage1.demo_source='gold1': expected d_weak"),
    ({"data.n_gold1": -1}, "data.n_gold1=-1: expected a number >= 0"),
    ({"data.answer_extraction": "loose"}, "data.answer_extraction='loose': expected one of strict, lenient"),
])
def test_weak_as_is_config_checks(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=override)


def test_weak_as_is_runs_on_the_embedded_world(tmp_path):
    "weak.finetune none + n_gold1 0: no weak training, D_weak and D_weak demos from the untrained weak model, Stage I runs."
    from w2s_nb.data import run_data
    from w2s_nb.stage1 import run_stage1
    from w2s_nb.weak import run_weak
    cfg = load_config(ROOT / "configs" / "default.yaml", {
        "device": "cpu", "data.n_gold1": 0, "data.n_gold2": 24, "data.n_test": 8, "weak.finetune": "none",
        "data.answer_extraction": "lenient",  # the untrained weak model often answers with a bare number
        "strong.sft.epochs": 1, "sampling.max_new_tokens": 64, "stage1.rounds": 1,
        "stage1.full_weak_baseline": False, "stage1.ceiling_baseline": False})
    rd = RunDir(tmp_path / "run")
    assert run_data(cfg, rd)["gold1"] == 0 and read_jsonl(rd.path("data", "gold1.jsonl")) == []
    summary = run_weak(cfg, rd)
    entry = read_json(rd.path("weak", "models.json"))["weak"]
    assert entry["label"] == "weak model (as is)" and entry["ref"]["adapters"] == [] and not rd.path("weak", "model").exists()
    d_weak, demos = read_jsonl(rd.path("weak", "d_weak.jsonl")), read_jsonl(rd.path("weak", "demos.jsonl"))
    gold2_ids = {r["id"] for r in read_jsonl(rd.path("data", "gold2_questions.jsonl"))}
    assert len(d_weak) == 24 and len(demos) == 4 and summary["demo_ids"] == [d["id"] for d in demos]
    assert {d["id"] for d in demos} <= gold2_ids                                            # demos: D_gold,2 ids from d_weak.jsonl
    by_id = {r["id"]: r for r in d_weak}
    assert all(d["solution"] == by_id[d["id"]]["text"].strip() for d in demos)
    m = run_stage1(cfg, rd)["rounds"][0]
    assert m["n_questions"] == 24 and m["weak_empty"] + m["selected"] <= 24 and rd.path("stage1", "models.json").exists()


# ---------------------------------------------------------------- OlympicArena

def test_olympicarena_filter_on_fixture_rows():
    ds = load_olympicarena(OLYMPIC_ROWS)
    assert list(ds["orig_id"]) == ["Math_1", "Physics_2", "Biology_3", "Chemistry_4", "Astronomy_5", "Geography_10"]
    assert list(ds["answer"]) == ["5", "20", "A,C", "True", "3", "7"]                  # lists joined
    assert [r["orig_id"] for r in load_olympicarena(OLYMPIC_ROWS, text_only=True)] == \
        ["Math_1", "Physics_2", "Biology_3", "Chemistry_4", "Geography_10"]              # the multi-modal one dropped
    assert not olympic_keep(dict(subject="CS", language="EN", answer_type="NV"))


def test_olympicarena_paper_config_builds_the_papers_prompt():
    cfg = load_config(ROOT / "configs" / "paper" / "olympicarena_llama3.yaml",
                      {"data.path": str(OLYMPIC_ROWS), "data.test_path": str(OLYMPIC_ROWS)})
    assert (cfg.weak.finetune, cfg.data.n_gold1, cfg.stage1.rounds, cfg.stage2.pairs_per_question) == ("none", 0, 2, 3)
    assert cfg.sampling.stop == ["Question", "Answer", "<|eot_id|>"] and answer_format(cfg.data) == "olympic"
    assert cfg.strong.sft.max_length == cfg.stage2.pref.max_length == 2048
    import json
    raw = json.loads(OLYMPIC_ROWS.read_text().splitlines()[0])
    ds = load_olympicarena(OLYMPIC_ROWS)
    # the paper's vllm_prompt: instance['prompt'].replace('\n\nproblem:\n', '\n\nQuestion: ') + '\n\nAnswer:'
    assert zero_shot_prompt(ds[0]["question"], cfg.data.prompt_template) == \
        raw["prompt"].replace("\n\nproblem:\n", "\n\nQuestion: ") + "\n\nAnswer:"
    pool, test = load_pool_and_test(cfg.data)
    assert len(test) == 6 and len(pool) == 0                                            # same file: the pool loses its overlap


def test_math_paper_configs_allow_long_solutions():
    for name in ("math_gemma-2b", "math_llama2-7b", "math_mistral-7b"):
        cfg = load_config(ROOT / "configs" / "paper" / f"{name}.yaml")
        assert cfg.strong.sft.max_length == cfg.weak.sft.max_length == cfg.sampling.max_new_tokens == 2048
        assert cfg.stage2.pairs_per_question == 3 and cfg.strong.sft.gradient_checkpointing
