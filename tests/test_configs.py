"""Every option of every config group composes and resolves; the CLI prints the composed config."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from domaintune.core.checks import Hardware, check_config
from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.errors import DomainTuneError
from tests.conftest import compose_train, script

# Options that are the default under another name (so `trainer=cpu` reads as meant); every other option must
# compose differently from the default, or it would have no effect.
ALIASES = {("trainer", "cpu")}
# Options that need a value only the user can give.
REQUIRED = {("model", "hf"): ["model.path=some/dir"], ("data", "custom"): ["data.dir=some/dir"]}
GROUPS = ["model", "data", "adapter", "optim", "module", "objective", "eval", "trainer", "logger", "callbacks", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


CASES = [(g, o) for g in GROUPS for o in options(g)] + [(g, o) for g in ("experiment", "hparams_search") for o in options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    cfg = compose_train(overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert all(isinstance(resolved[g]["name"], str) and resolved[g]["name"] for g in ("model", "data", "adapter"))
    # the option changes what is composed: an option that composes like the default would have no effect
    default = compose_train(REQUIRED.get((group, option), []), tmp_path)
    if default.hydra.runtime.choices.get(group) != option and (group, option) not in ALIASES:
        mine = resolved if group in ("experiment", "hparams_search") else resolved[group]
        theirs = OmegaConf.to_container(default, resolve=True)
        theirs = theirs if group in ("experiment", "hparams_search") else theirs[group]
        for tree in (mine, theirs):
            if isinstance(tree, dict):
                tree.pop("hydra", None)  # experiments also set Hydra's run folder; compare what the run reads
        assert mine != theirs, f"{group}={option} composes the same as the default"


@pytest.mark.parametrize("option", options("optim"))
def test_every_optimizer_config_builds_its_optimizer_and_schedule(option: str, tmp_path: Path) -> None:
    """Each optim option builds (hydra.utils.instantiate) with only its own keys (an SGD must not inherit
    AdamW's betas) and takes a step; the schedule warms up from zero."""
    import torch
    from hydra.utils import instantiate

    cfg = compose_train([f"optim={option}"], tmp_path)
    optim = instantiate(cfg.optim)
    weight = torch.nn.Parameter(torch.ones(3, 3))
    optimizer, schedule = optim.build(torch.nn.ParameterList([weight]), total=10)
    assert type(optimizer).__name__.lower() == option
    assert schedule.get_last_lr() == [0.0, 0.0] and optim.warmup(10) == 1
    for _ in range(2):  # the first step runs at lr 0 (warmup), the second moves the weights
        weight.grad = torch.ones(3, 3)
        optimizer.step()
        schedule.step()
    assert schedule.get_last_lr()[0] > 0 and not torch.equal(weight.detach(), torch.ones(3, 3))


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} has no options"


@pytest.mark.parametrize("script", ["evaluate", "chat", "generate", "merge"])
def test_inference_run_folder_is_named_after_the_run_it_uses(script: str, tmp_path: Path) -> None:
    """`scripts/evaluate.py run_dir=.../12-00-00_education_lora` lands in `..._education_lora`, not under
    the default data name; a sweep job folder (`3_education_ia3`) is named the same way."""
    cases = {"outputs/train/2026-01-01/12-00-00_education_lora": "education_lora", "m/3_education_ia3": "education_ia3"}
    for run_dir, label in cases.items():
        cfg = compose_train([f"run_dir={run_dir}"], tmp_path, config_name=script)
        assert cfg.run_name == label
    assert compose_train([], tmp_path, config_name=script).run_name in ("healthcare", "smollm2-135m-instruct")


# ------------------------------------------------------------------------------------------ combinations
CPU = Hardware(gpus=0, bf16_gpu=False, deepspeed_installed=False)
ONE_GPU = Hardware(gpus=1, bf16_gpu=True, deepspeed_installed=False)
TWO_GPUS = Hardware(gpus=2, bf16_gpu=True, deepspeed_installed=True)
# trainer option -> the error it gets on each machine (None: accepted as shipped)
TRAINERS = {
    "default": (None, None, None),
    "cpu": (None, None, None),
    "debug": (None, None, None),
    "ddp": (None, r"trainer\.devices=2 but 1 GPU", None),  # accelerator auto: CPU processes without a GPU
    "gpu": ("needs a CUDA GPU", None, None),
    "fsdp": ("needs a CUDA GPU", r"trainer\.devices=2 but 1 GPU", None),
    "deepspeed": ("needs a CUDA GPU", "needs the `deepspeed` package", None),
}


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_trainer_option_is_validated_on_every_machine(trainer: str, tmp_path: Path) -> None:
    """Each shipped trainer config either runs as shipped or is refused up front, with the fix in the message."""
    assert set(TRAINERS) == set(options("trainer")), "a trainer option without an expectation here"
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    for hw, expected in zip((CPU, ONE_GPU, TWO_GPUS), TRAINERS[trainer], strict=True):
        if expected is None:
            check_config(cfg, hw)
        else:
            with pytest.raises(DomainTuneError, match=expected) as err:
                check_config(cfg, hw)
            assert (
                "Use " in str(err.value) or "Set " in str(err.value) or "Install " in str(err.value) or "Run " in str(err.value)
            )


@pytest.mark.parametrize(
    ("overrides", "hw", "expected"),
    [
        (["trainer.precision=16-mixed"], CPU, "fp16"),
        (["trainer.precision=16-true"], CPU, "fp16"),
        (["trainer=gpu", "trainer.precision=bf16-mixed"], Hardware(1, False, False), "no bf16 support"),
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.strategy=fsdp"], CPU, "does not run on the CPU"),
        (["trainer=deepspeed", "trainer.gradient_clip_algorithm=value"], TWO_GPUS, "clips gradients by norm only"),
        (["data.packing=true", "adapter=prompt_tuning"], CPU, "prepends virtual tokens"),
        (["data.packing=true", "adapter=prefix_tuning"], CPU, "prepends virtual tokens"),
    ],
)
def test_impossible_combinations_are_refused_before_loading(
    overrides: list[str], hw: Hardware, expected: str, tmp_path: Path
) -> None:
    with pytest.raises(DomainTuneError, match=expected):
        check_config(compose_train(overrides, tmp_path), hw)


def test_run_refuses_a_bad_combination_before_loading_the_model(make_cfg, monkeypatch) -> None:
    import domaintune.core.pipeline as train_mod

    def never(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(train_mod, "load_model", never)
    with pytest.raises(DomainTuneError, match="prepends virtual tokens"):
        train_mod.fit_and_evaluate(make_cfg("data.packing=true", "adapter=prompt_tuning", "logger=none"))


def test_cli_prints_composed_config() -> None:
    out = script("train.py", "--cfg", "job", "data=marketing", "adapter=ia3", timeout=120)
    cfg = OmegaConf.create(out.stdout)
    assert cfg.data.name == "marketing" and cfg.adapter.name == "ia3"
    assert cfg.data.task.type == "generation"
