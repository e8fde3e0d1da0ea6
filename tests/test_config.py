"""Config: YAML round-trip, overrides, and every validation error path."""
import pytest
import yaml

from w2s_nb.config import (ConfigError, RunConfig, apply_overrides, from_dict, load_config, parse_override,
                           save_config, to_dict, validate)


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, RunConfig) and cfg.stage2.tau == 0.6 and cfg.strong.lora.r == 8
    p = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(p) == cfg
    assert yaml.safe_load(p.read_text())["stage2"]["tau_high"] == 0.8


def test_overrides_list_and_dict_forms():
    a = load_config(overrides=["stage2.tau=0.7", "strong.lora.targets=[q_proj, v_proj]", "data.path=null"])
    b = load_config(overrides={"stage2.tau": 0.7, "strong.lora.targets": ["q_proj", "v_proj"]})
    assert a == b and a.stage2.tau == 0.7 and a.data.path is None


def test_extends_and_file_values(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\nstage1:\n  rounds: 1\n  n_shots: 2\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nstage1:\n  rounds: 2\n")
    cfg = load_config(tmp_path / "child.yaml", ["name=x"])
    assert (cfg.seed, cfg.stage1.rounds, cfg.stage1.n_shots, cfg.name) == (3, 2, 2, "x")


@pytest.mark.parametrize("override, message", [
    ({"stage2.methods": ["dpoo"]}, "stage2.methods=['dpoo']: expected one of dpo, orpo, simpo"),
    ({"strong.finetune": "qloraa"}, "strong.finetune='qloraa': expected one of qlora, lora, full"),
    ({"stage1.rounds": 0}, "stage1.rounds=0: expected a number >= 1"),
    ({"stage2.top_p": 1.5}, "stage2.top_p=1.5: expected a number <= 1"),
    ({"stage2.temperature": 0}, "stage2.temperature=0: expected a number > 0"),
    ({"weak.lora.dropout": 1.0}, "weak.lora.dropout=1.0: expected a number < 1"),
    ({"seed": "one"}, "seed='one': expected int"),
    ({"seed": True}, "seed=True: expected int"),
    ({"data.prompt_template": "Q: {q}"}, "expected a template containing {question}"),
    ({"data.dataset": "jsonl"}, "data.path=None: expected a file path when dataset='jsonl'"),
    ({"stage2.tau": 0.9, "stage2.tau_high": 0.8}, "stage2.tau_high=0.8: expected a number >= tau (0.9)"),
    ({"stage1.demo_choice": "fixed"}, "stage1.demo_ids=[]: expected 4 ids (n_shots) when demo_choice='fixed'"),
    ({"stage2.bogus": 1}, "unknown config key(s): stage2.bogus"),
    ({"bogus": 1}, "unknown config key(s): bogus"),
    ({"stage2": 5}, "stage2=5: expected a mapping of Stage2Config fields"),
    ({"data.dataset": "imagenet"}, "data.dataset='imagenet': expected one of world, gsm8k, math, jsonl"),
    ({"stage2.pref.weight_decay": -1}, "stage2.pref.weight_decay=-1: expected a number >= 0"),   # shared field
    ({"stage2.pref.merge_adapter": True}, "unknown config key(s): stage2.pref.merge_adapter"),  # SFT's own
])
def test_each_validation_error_names_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=override)
    assert message in str(e.value)


def test_trainers_share_fields_and_read_their_own():
    "SFT and preference settings extend one TrainSettings; each section keeps its own values and defaults."
    from dataclasses import fields
    from w2s_nb.config import PrefSettings, SFTSettings, TrainSettings
    shared = [f.name for f in fields(TrainSettings)]
    assert "gradient_checkpointing" in shared and "weight_decay" in shared
    assert issubclass(SFTSettings, TrainSettings) and issubclass(PrefSettings, TrainSettings)
    cfg = load_config(overrides={"stage2.pref.gradient_checkpointing": True, "strong.sft.weight_decay": 0.1})
    assert (cfg.stage2.pref.gradient_checkpointing, cfg.strong.sft.gradient_checkpointing) == (True, False)
    assert (cfg.strong.sft.weight_decay, cfg.stage2.pref.weight_decay) == (0.1, 0.0)
    assert (cfg.strong.sft.lr, cfg.stage2.pref.lr, cfg.stage2.pref.max_length) == (2e-4, 5e-5, 1024)


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"stage1.rounds": 0, "stage2.n": 1, "eval.n": 0})
    msg = str(e.value)
    assert all(k in msg for k in ("stage1.rounds=0", "stage2.n=1", "eval.n=0"))


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(tmp_path / "list.yaml")


def test_override_parsing():
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a=[x, y]") == ("a", ["x", "y"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"seed": 1}, {"seed.x": 2})


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("strong:\n  sft: {lr: 2e-5}\nstage2:\n  pref: {lr: 5E-7}\n")
    cfg = load_config(tmp_path / "c.yaml", ["weak.sft.lr=3e-4"])
    assert (cfg.strong.sft.lr, cfg.stage2.pref.lr, cfg.weak.sft.lr) == (2e-5, 5e-7, 3e-4)
    assert parse_override("name='1e3'") == ("name", "1e3") and parse_override("seed=12") == ("seed", 12)


def test_from_dict_and_validate_direct():
    cfg = from_dict(RunConfig, {"stage2": {"tau": 0.5}})
    assert validate(cfg).stage2.tau == 0.5
    assert to_dict(cfg)["stage2"]["tau"] == 0.5


def test_world_qlora_is_the_default_world_with_qlora():
    import dataclasses
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "configs"
    d, q = load_config(root / "default.yaml"), load_config(root / "world-qlora.yaml")
    assert (q.weak.finetune, q.strong.finetune, q.name) == ("qlora", "qlora", "world-qlora")
    lora = dataclasses.replace(q, name=d.name, weak=dataclasses.replace(q.weak, finetune="lora"),
                               strong=dataclasses.replace(q.strong, finetune="lora"))
    assert lora == d                                        # nothing else differs


def test_gpu_configs_are_valid_and_split_batches():
    "The GPU smoke config and the paper configs load; every grad_accum splits over 2 processes (DDP on 2 GPUs)."
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "configs"
    for p in [root / "gpu-smoke.yaml", *sorted(q for q in (root / "paper").glob("*.yaml") if not q.name.startswith("_"))]:
        cfg = load_config(p)
        assert cfg.sampling.max_batch_tokens, p.name
        assert (cfg.sampling.backend, cfg.sampling.vllm_adapters, cfg.sampling.tensor_parallel_size) == ("vllm", "lora", 1), p.name
    smoke = load_config(root / "gpu-smoke.yaml", ["num_processes=2"])
    assert (smoke.sampling.backend, smoke.strong.finetune, smoke.strong.path) == ("vllm", "qlora", "Qwen/Qwen2.5-1.5B")


CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"
GPU_CONFIGS = [CONFIGS / "gpu-smoke.yaml", *sorted(q for q in (CONFIGS / "paper").glob("*.yaml") if not q.name.startswith("_"))]


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_configs_validate_on_any_gpu_count(path, n, capsys):
    "`w2s config check CONFIG --set num_processes=N` accepts every paper config and the smoke config on 1-8 GPUs."
    from w2s_nb.cli import main
    assert load_config(path, [f"num_processes={n}"]).num_processes == n
    assert main(["config", "check", str(path), "--set", f"num_processes={n}"]) == 0, capsys.readouterr().err
    assert "valid" in capsys.readouterr().err


def test_per_device_batch_keeps_the_global_batch():
    from w2s_nb.config import per_device_batch
    for b in range(1, 13):
        for a in range(1, 9):
            for n in (1, 2, 3, 4, 8):
                if (b * a) % n:
                    with pytest.raises(ConfigError, match=f"grad_accum={a}: the global batch .* num_processes={n}"):
                        per_device_batch(b, a, n)
                    continue
                pb, pa = per_device_batch(b, a, n)
                assert pb * pa * n == b * a and 1 <= pb <= b, (b, a, n, pb, pa)
                if a % n == 0: assert (pb, pa) == (b, a // n)      # the split the old code made, where it made one


def test_an_unsplittable_global_batch_names_the_grad_accum_to_set():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"num_processes": 4, "strong.sft.batch_size": 6, "strong.sft.grad_accum": 1})
    assert "strong.sft.grad_accum=1: the global batch batch_size × grad_accum = 6 × 1 = 6 does not split over " \
           "num_processes=4" in str(e.value) and "set grad_accum=2" in str(e.value)
    assert load_config(overrides={"num_processes": 4, "strong.sft.batch_size": 6, "strong.sft.grad_accum": 2})


def test_an_override_inside_a_section_keeps_the_section_defaults():
    "`--set strong.sft.lr=...` without a config file: strong stays world:strong (it became world:weak, the class default)."
    cfg = load_config(overrides={"strong.sft.lr": 1e-3, "weak.lora.r": 4})
    assert (cfg.strong.path, cfg.strong.sft.lr, cfg.weak.path, cfg.weak.lora.r) == ("world:strong", 1e-3, "world:weak", 4)
    assert cfg == load_config(overrides={"strong.sft.lr": 1e-3, "weak.lora.r": 4, "strong.path": "world:strong"})


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_configs_pin_hub_models_pick_precision_by_hardware_and_checkpoint(path):
    "Every hub model pinned to a commit, `dtype: auto` (bf16 / fp16 by GPU), paper weak SFT with gradient checkpointing."
    import re
    cfg = load_config(path)
    for m in (cfg.weak, cfg.strong):
        assert re.fullmatch(r"[0-9a-f]{40}", m.revision or ""), (path.name, m.path, m.revision)
        assert m.dtype == "auto", (path.name, m.path)
    assert cfg.strong.revision != cfg.weak.revision
    if path.parent.name == "paper":
        assert cfg.strong.sft.gradient_checkpointing and cfg.stage2.pref.gradient_checkpointing
        assert cfg.weak.finetune == "none" or cfg.weak.sft.gradient_checkpointing, path.name
        assert 0 < cfg.strong.sft.save_steps <= 200 and 0 < cfg.stage2.pref.save_steps <= 200
