"""The embedded world: deterministic problems in GSM8K format, shipped models that load like any HF model."""
import json

from w2s_nb.answers import extract_answer
from w2s_nb.data import load_gsm8k
from w2s_nb.models import ModelRef, load_model, load_tokenizer, resolve_model_path
from w2s_nb.config import ModelConfig
from w2s_nb.world import WorldSpec, corpus, dataset, doc_text, gsm_record, pack, world_data_paths, world_model_path


def test_problems_are_deterministic_and_correct():
    a, b = dataset(3, 50), dataset(3, 50)
    assert a == b and len({p["question"] for p in a}) == 50
    for p in a:
        prev = None
        for i, (_, _, l, op, r, c) in enumerate(p["lines"]):
            assert (op is None) == (i == 0 and "of" not in p["question"].split(".")[0])  # opening restated
            assert op is None or c == {"+": l + r, "-": l - r, "*": l * r}[op]
            assert 1 <= c <= WorldSpec().maxv and (prev is None or l == prev)  # each step continues from the last total
            prev = c
        assert extract_answer(gsm_record(p)["answer"], "gsm8k") == str(p["answer"]) == str(c)
        assert p["question"].count(".") == len(p["lines"]) and gsm_record(p)["answer"].count("\n") == len(p["lines"])


def test_corpus_mixes_formats():
    docs = [doc_text(d) for d in corpus(1, 200)]
    assert sum(d.startswith("Question:") for d in docs) < sum(d.startswith(("Problem:", "Q:", "Exercise:", "Task:")) for d in docs)
    assert any(" = " in d and "Question" not in d and ":" not in d.splitlines()[0] for d in docs)  # drills


def test_pack_masks_questions_and_keeps_numbers_whole():
    tok = load_tokenizer(ModelRef(resolve_model_path("world:weak")), ModelConfig(path="world:weak"))
    assert all(len(tok(f" {n}", add_special_tokens=False)["input_ids"]) == 1 for n in range(1, WorldSpec().maxv + 1))
    docs = corpus(2, 40)
    ids, labels = pack(docs, tok, 64)
    assert ids.shape == labels.shape and ids.shape[1] == 64
    kept = labels != -100
    assert (ids[kept] == labels[kept]).all() and 0.3 < kept.float().mean() < 0.95  # questions are masked, the rest trained
    q = docs[next(i for i, d in enumerate(docs) if len(d) > 1)][1][0]  # a question segment
    q_ids = tok(q, add_special_tokens=False)["input_ids"]
    flat_ids, flat_lab = ids.flatten().tolist(), labels.flatten().tolist()
    at = next(i for i in range(len(flat_ids)) if flat_ids[i:i + len(q_ids)] == q_ids)
    assert set(flat_lab[at:at + len(q_ids)]) == {-100}


def test_data_files_load_with_the_gsm8k_loader(tmp_path):
    p = world_data_paths(tmp_path, n_train=30, n_test=10)
    train, test = load_gsm8k(p["train"], source="world"), load_gsm8k(p["test"], source="world")
    assert len(train) == 30 and len(test) == 10 and not set(train["question"]) & set(test["question"])
    assert world_data_paths(tmp_path, n_train=30, n_test=10) == p


def test_shipped_models_match_the_spec_and_load():
    for role in ("weak", "strong"):
        d = world_model_path(role)
        info = json.loads((d / "world.json").read_text())
        assert info["spec_key"] == WorldSpec().key(role) and info["role"] == role
        assert str(d) == resolve_model_path(f"world:{role}")
    cfg = ModelConfig(path="world:strong", finetune="lora", dtype="float32")
    ref = ModelRef(resolve_model_path("world:strong"))
    m, tok = load_model(ref, cfg, "cpu"), load_tokenizer(ref, cfg)
    assert sum(p.numel() for p in m.parameters()) == json.loads((world_model_path("strong") / "world.json").read_text())["params"]
    assert tok.decode(tok("Question: 12 + 7 = 19")["input_ids"], skip_special_tokens=True) == "Question: 12 + 7 = 19"


def test_each_model_is_tagged_with_its_own_part_of_the_spec():
    import dataclasses
    from w2s_nb.world import ModelSpec
    a = WorldSpec()
    b = dataclasses.replace(a, weak=ModelSpec(hidden=32, layers=1, heads=2, intermediate=64, docs=10))
    assert a.key("strong") == b.key("strong") and a.key("weak") != b.key("weak") and a.key() != b.key()
    c = dataclasses.replace(a, p_target=0.5)  # a corpus setting: both models change
    assert a.key("strong") != c.key("strong") and a.key("weak") != c.key("weak")
