"""The weak stage: D_weak demonstrations (the paper's choice) and its ablations, a weak model used as is, OlympicArena data."""
from pathlib import Path

import pytest

from w2s_nb.config import ConfigError, Stage1Config, load_config
from w2s_nb.data import answer_format, load_olympicarena, load_pool_and_test, olympic_keep, zero_shot_prompt
from w2s_nb.rundir import RunDir, read_json, read_jsonl
from w2s_nb.weak import choose_demo_questions, d_weak_demos, demo_records

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
    demos = d_weak_demos(_d_weak(), _gold2(), s1, seed=0, fmt="gsm8k")
    by_id = {r["id"]: r for r in _d_weak()}
    assert len(demos) == 4 and all(d["id"] in by_id for d in demos)                       # D_gold,2 ids, from D_weak
    assert all(d["solution"] == by_id[d["id"]]["text"].strip() and d["answer"] == by_id[d["id"]]["pred"] for d in demos)
    assert [d["correct"] for d in demos] == [int(d["id"].split("-")[1]) % 3 == 0 for d in demos]   # gold only marks them
    assert d_weak_demos(_d_weak(), _gold2(), s1, seed=0, fmt="gsm8k") == demos              # seeded
    assert {d["id"] for s in range(10) for d in d_weak_demos(_d_weak(), _gold2(), s1, s, "gsm8k")} != {d["id"] for d in demos}


def test_demo_ablations_random_correct_and_fixed():
    right = d_weak_demos(_d_weak(), _gold2(), Stage1Config(demo_choice="correct"), seed=0, fmt="gsm8k")
    assert {d["id"] for d in right} == {"g2-0", "g2-3", "g2-6", "g2-9"} and all(d["correct"] for d in right)
    fixed = d_weak_demos(_d_weak(), _gold2(), Stage1Config(demo_choice="fixed", demo_ids=["g2-5", "g2-1", "g2-2", "g2-7"]), 0, "gsm8k")
    assert [d["id"] for d in fixed] == ["g2-5", "g2-1", "g2-2", "g2-7"]
    with pytest.raises(ValueError, match=r"not in D_gold,2 \(d_weak.jsonl\): \['gold1-0'\]"):
        d_weak_demos(_d_weak(), _gold2(), Stage1Config(demo_choice="fixed", demo_ids=["gold1-0", "g2-1", "g2-2", "g2-7"]), 0, "gsm8k")


def test_gold1_option_keeps_the_earlier_choice():
    gold1 = [dict(id=f"g1-{i}", question=f"q{i}", answer=str(i)) for i in range(8)]
    cands = choose_demo_questions(gold1, 4, "random", seed=0, where="D_gold,1")
    labels = [dict(id=c["id"], question=c["question"], text=f" #### {c['answer']}", pred=c["answer"]) for c in cands]
    assert all(d["id"].startswith("g1-") and d["correct"] for d in demo_records(cands, labels, 4, "random", "gsm8k"))
    assert load_config(overrides={"stage1.demo_source": "gold1"}).stage1.demo_source == "gold1"


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
