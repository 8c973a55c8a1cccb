"""Configs build the objects: the DataModule, Preprocessor, Evaluator, LightningModule and optimizer come from
`hydra.utils.instantiate` of the real composed configs, each parameter reaches its use, and a key nothing
reads is refused rather than ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from domaintune.core.checks import Hardware, check_config, check_keys
from domaintune.data.datamodule import SERVING_ARGUMENTS, DomainDataModule
from domaintune.data.preprocess import Preprocessor
from domaintune.data.recipe import DataRecipe
from domaintune.evaluation.evaluator import Evaluator
from domaintune.evaluation.evidence import Evidence
from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.loss import LossOptions
from domaintune.models.module import CausalLMModule
from domaintune.models.optim import Optimization
from domaintune.utils.config import fill_data, fill_missing, to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import DOMAINS, compose_train

CPU = Hardware(gpus=0, bf16_gpu=False, deepspeed_installed=False)
DATA = [*DOMAINS, "fact_checking_cited", "mixture", "customer_service_replay", "preferences"]


@pytest.mark.parametrize("data", DATA)
def test_each_data_config_builds_its_datamodule_and_preprocessors(data: str, make_cfg, tokenizer) -> None:
    cfg = make_cfg(f"data={data}", "data.batch_size=3", "data.max_length=256", "data.packing=false")
    dm = build(cfg.data, tokenizer=tokenizer)
    assert isinstance(dm, DomainDataModule) and isinstance(dm.recipe, DataRecipe)
    dm.prepare()  # the settings act: no example beyond max_length, no batch beyond batch_size
    assert max(len(e["input_ids"]) for e in dm.examples["train"]) <= 256
    assert max(len(b["input_ids"]) for b in dm.train_dataloader()) <= 3
    for part in dm.recipe.sources():  # a mixture's components each build their own preprocessor
        assert isinstance(build(part.preprocess, task=dm.tasks[next(iter(dm.tasks))]), Preprocessor)
    if data in ("mixture", "customer_service_replay"):
        assert set(dm.recipe.components) == {"healthcare", "customer_service"}
        assert dm.recipe.weights == to_dict(cfg.data.weights)


def test_parameters_reach_their_use_from_the_yaml(make_cfg, tokenizer) -> None:
    """The walk from YAML to use is one `instantiate` (max_length, packing, lora r, lr): each override lands
    where it acts."""
    cfg = make_cfg("data.max_length=200", "data.packing=false", "adapter.peft.r=4", "optim.lr=0.0123")
    dm = build(cfg.data, tokenizer=tokenizer)
    assert dm.renderer.max_length == 200 and dm.packing is False
    dm.prepare()
    assert max(len(e["input_ids"]) for e in dm.examples["train"]) <= 200
    assert dm.batching()["packed"] is False
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    assert model.peft_config["default"].r == 4
    module = build(
        cfg.module, model=model, loss=LossOptions.from_config(cfg.model), identity={}, objective=instantiate(cfg.objective)
    )
    assert isinstance(module, CausalLMModule) and isinstance(module.optim, Optimization)
    optimizer, schedule = module.optim.build(module.model, total=10)
    assert {g["initial_lr"] for g in optimizer.param_groups} == {0.0123}
    assert type(optimizer).__name__ == "AdamW" and schedule.get_last_lr() == [0.0, 0.0]  # warmup starts at 0


def test_evaluator_is_built_from_the_eval_config(make_cfg, tokenizer) -> None:
    cfg = make_cfg(
        "eval.split=[test,validation]",
        "eval.max_samples=3",
        "eval.general=piqa",
        "eval.bootstrap.resamples=123",
        "eval.bootstrap.confidence=0.9",
    )
    evaluator = build(cfg.eval, data=build(cfg.data, tokenizer=tokenizer), loss=LossOptions(True, None, True))
    assert isinstance(evaluator, Evaluator)
    assert evaluator.splits == ["test", "validation"] and evaluator.max_samples == 3 and evaluator.general == ["piqa"]
    planted = Evidence("mean", ["a", "b", "c"], [1.0, 2.0, 3.0]).to_dict()
    [interval] = evaluator.bootstrap.paired({"m": planted}, {"m": planted}).values()
    assert interval.resamples == 123 and interval.confidence == 0.9, "eval.bootstrap reaches the intervals"
    with pytest.raises(DomainTuneError, match=r"eval\.benchmarks\.mine lacks kind, split, delimiter, max_samples, batch_size"):
        build(
            make_cfg("eval.general=mine", "+eval.benchmarks.mine={dir: x, prompt: p}").eval,
            data=build(cfg.data, tokenizer=tokenizer),
            loss=LossOptions(True, None, True),
        )
    kind = make_cfg(
        "eval.general=mine",
        "+eval.benchmarks.mine={kind: poll, dir: x, split: s, prompt: p, delimiter: ' ', max_samples: null, batch_size: 2}",
    )
    with pytest.raises(DomainTuneError, match=r"eval\.benchmarks\.mine\.kind.*poll"):
        build(kind.eval, data=build(cfg.data, tokenizer=tokenizer), loss=LossOptions(True, None, True))
    with pytest.raises(DomainTuneError, match="Unknown benchmark 'nope'"):
        build(make_cfg("eval.general=nope").eval, data=build(cfg.data, tokenizer=tokenizer), loss=LossOptions(True, None, True))


KEYS_NOTHING_READS = {
    "+data.max_lenght=5": r"data has keys that nothing reads: 'max_lenght'",
    "+data.preprocess.unicodes=false": r"data\.preprocess has keys that nothing reads: 'unicodes'",
    "+eval.splits=[test]": r"eval has keys that nothing reads: 'splits'",
    "+optim.learning_rate=0.1": r"optim has keys that nothing reads: 'learning_rate'",
    "+module.optimizer=x": r"module has keys that nothing reads: 'optimizer'",
}


@pytest.mark.parametrize("override", list(KEYS_NOTHING_READS))
def test_a_key_nothing_reads_is_refused_before_anything_loads(override: str, make_cfg, tokenizer) -> None:
    """check_config (the first thing a run does) compares each object config with its class's arguments."""
    cfg = make_cfg(override)
    with pytest.raises(DomainTuneError, match=KEYS_NOTHING_READS[override]):
        check_config(cfg, CPU)
    if override.startswith("+data"):  # building the object refuses it too (scripts that skip check_config)
        with pytest.raises(DomainTuneError, match=override.split("=")[0].rsplit(".", 1)[-1]):
            build(cfg.data, tokenizer=tokenizer).prepare()


def test_a_mixture_component_key_nothing_reads_is_refused(make_cfg) -> None:
    for override, where in [
        ("+data.components.healthcare.answers=1", r"data\.components\.healthcare has keys that nothing reads: 'answers'"),
        ("+data.components.healthcare.preprocess.htm=true", r"preprocess is \{'htm': True\}: an override replaced"),
        ("++data.components.healthcare.preprocess.html=false", r"preprocess is \{'html': False\}: an override replaced"),
    ]:
        with pytest.raises(DomainTuneError, match=where):
            check_config(make_cfg("data=mixture", override), CPU)


def test_the_shipped_configs_have_no_key_nothing_reads(tmp_path: Path) -> None:
    for data in DATA:
        check_keys(compose_train([f"data={data}"], tmp_path))


def test_serving_keys_leave_the_cache_key_alone_and_content_keys_change_it(make_cfg, tokenizer) -> None:
    """The DataModule's own arguments (batches) are not in the fingerprint; every recipe key is."""
    base = build(make_cfg().data, tokenizer=tokenizer).fingerprint()
    served = ["data.batch_size=2", "data.eval_batch_size=3", "data.num_workers=1", "data.packing=true"]
    served += ["data.group_by_length=false", "data.val_max_samples=5", "data.packing_min_gain=0.5"]
    assert {build(make_cfg(o).data, tokenizer=tokenizer).fingerprint() for o in served} == {base}
    assert {o.split("=")[0].removeprefix("data.") for o in served} <= SERVING_ARGUMENTS
    content = ["data.max_length=100", "seed=7", "data.preprocess.pii.enabled=false", "data.task.system_prompt=Hi"]
    prints = {build(make_cfg(o).data, tokenizer=tokenizer).fingerprint() for o in content}
    assert base not in prints and len(prints) == len(content)


def test_a_config_saved_before_targets_existed_still_builds(make_cfg, tokenizer, tmp_path: Path) -> None:
    """A run folder or lineage entry of an older version lacks `_target_`, `seed` and the preprocess target:
    today's keys fill in (values it has are kept), and it prepares the same data."""
    cfg = make_cfg()
    old = to_dict(cfg.data)
    for key in ("_target_", "_recursive_", "seed"):
        old.pop(key)
    old["preprocess"].pop("_target_")
    old["task"]["fields"] = {"question": "question"}
    filled = fill_missing(OmegaConf.create(old), cfg.data)
    assert filled.task.fields == {"question": "question"}, "a plain nested dict must not get today's entries"
    assert build(filled, tokenizer=tokenizer).fingerprint() != build(cfg.data, tokenizer=tokenizer).fingerprint()
    filled.task.fields = cfg.data.task.fields
    assert build(filled, tokenizer=tokenizer).fingerprint() == build(cfg.data, tokenizer=tokenizer).fingerprint()


def test_a_mixture_saved_before_targets_existed_still_builds(make_cfg, tokenizer) -> None:
    """Its components get today's single-source keys (targets, seed); a single-source config is never turned into
    a mixture by today's mixture keys."""
    today_mixture = make_cfg("data=mixture").data
    old = to_dict(today_mixture)
    for part in [old, *old["components"].values()]:
        for key in ("_target_", "_recursive_", "seed"):
            part.pop(key)
        part["preprocess"].pop("_target_")
    filled = fill_data(OmegaConf.create(old), make_cfg().data)  # today's default data is single-source
    assert build(filled, tokenizer=tokenizer).fingerprint() == build(today_mixture, tokenizer=tokenizer).fingerprint()
    single = to_dict(make_cfg().data)
    single.pop("_target_")
    assert "components" not in fill_data(OmegaConf.create(single), today_mixture)


def test_a_run_saved_before_new_task_and_benchmark_keys_still_loads(make_cfg, tokenizer, tmp_path: Path) -> None:
    """A run folder of an older version lacks data.task.span_separator, eval.memorisation, eval.calibration, keys
    added since to eval blocks it has (generation.auto_cap), the benchmarks' `kind` and today's bias benchmarks:
    loading it (evaluate, serve, export) fills them in, with the task's default from
    _base.yaml even when today's composed data is another domain, and builds its DataModule and Evaluator."""
    from domaintune.core.inference import with_run_config

    saved = to_dict(make_cfg())
    saved["data"]["task"].pop("span_separator")
    saved["eval"].pop("memorisation")
    saved["eval"].pop("calibration")
    saved["eval"]["generation"].pop("auto_cap")  # a block it has, lacking a key added since
    saved["eval"]["generation"]["max_samples"] = 7  # a value it has is kept
    saved["eval"]["benchmarks"] = {"piqa": {k: v for k, v in saved["eval"]["benchmarks"]["piqa"].items() if k != "kind"}}
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    today = make_cfg("data=finance", f"+run_dir={run}")
    cfg = with_run_config(today, [f"run_dir={run}"])
    assert cfg.data.name == "healthcare" and cfg.data.task.span_separator is None, "the default, not finance's '; '"
    assert cfg.eval.benchmarks.piqa.kind == "multiple_choice" and {"crows_pairs", "bbq"} <= set(cfg.eval.benchmarks)
    assert cfg.eval.memorisation.max_samples == today.eval.memorisation.max_samples
    assert cfg.eval.generation.auto_cap == today.eval.generation.auto_cap and cfg.eval.generation.max_samples == 7
    assert cfg.eval.calibration.split is None
    dm = build(cfg.data, tokenizer=tokenizer)
    build(cfg.eval, data=dm, loss=LossOptions(True, None, True))
