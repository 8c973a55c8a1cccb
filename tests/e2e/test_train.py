"""End-to-end runs on the tiny model: every adapter trains, a run leaves all its artifacts, resume works."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from domaintune.core.pipeline import fit_and_evaluate, resolve_checkpoint
from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.loss import LossOptions
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import TINY, compose_train, script, wandb_blob

# what each adapter trains, by parameter name (freeze: the top block of the tiny model's two, its norm and head)
TRAINS = {
    "lora": lambda n: "lora_" in n,
    "dora": lambda n: "lora_" in n,
    "ia3": lambda n: "ia3_" in n,
    "prompt_tuning": lambda n: "prompt_encoder" in n,
    "prefix_tuning": lambda n: "prompt_encoder" in n,
    "full": lambda n: True,
    "freeze": lambda n: ".layers.1." in n or n.endswith(("norm.weight", "lm_head.weight", "embed_tokens.weight")),
}


@pytest.mark.parametrize("adapter", list(TRAINS))
def test_debug_run_trains_every_adapter(adapter: str, make_cfg) -> None:
    """Each adapter trains exactly its own parameters, and the step moved them away from a fresh adapter's."""
    import pytorch_lightning as pl

    cfg = make_cfg(
        f"adapter={adapter}",
        "trainer=debug",
        "logger=none",
        "optim.warmup_ratio=0",  # the one step trains at the full rate (a warmup would start it at 0)
        "adapter.train_top_n=1" if adapter == "freeze" else "seed=1",
    )
    run = fit_and_evaluate(cfg)
    assert run is not None and run.trainer.global_step == 1
    trained = {n: p for n, p in run.module.model.named_parameters() if p.requires_grad}
    assert trained and all(TRAINS[adapter](n) for n in trained), sorted(trained)[:5]
    pl.seed_everything(cfg.seed)
    fresh = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    start = {n: p for n, p in fresh.named_parameters() if p.requires_grad}
    assert set(start) == set(trained), "the run trains the parameters the adapter config makes trainable"
    assert any(not torch.equal(trained[n].detach().float(), start[n].detach().float()) for n in trained), "no weight moved"
    assert (Path(cfg.paths.output_dir) / "adapter").is_dir()


def test_run_writes_metrics_samples_adapter_and_wandb(make_cfg) -> None:
    cfg = make_cfg("logger=wandb")
    out = Path(cfg.paths.output_dir)
    run = fit_and_evaluate(cfg)
    import wandb

    wandb.finish()
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("base", "tuned", "change"):
        assert {"loss", "perplexity"} <= set(metrics[stage])
    assert metrics["change"]["loss"] == pytest.approx(metrics["tuned"]["loss"] - metrics["base"]["loss"])
    samples = (out / "samples.md").read_text()
    assert samples.count("**Base model**") == 2 and samples.count("**Tuned model**") == 2
    assert (out / "data_report.json").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "csv" / "metrics.csv").read_text().count("train/loss") == 1
    # the offline W&B run holds the training curve and the before/after metrics
    [wandb_file] = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    blob = wandb_blob(wandb_file, b"eval/comparison")
    for key in (
        b"train/loss",
        b"eval/base/perplexity",
        b"eval/tuned/perplexity",
        b"eval/ci_low/loss",
        b"eval/ci_high/loss",
        b"eval/comparison",
        b"healthcare",
        b"eval/samples",
        b"data/audit",
        b"data_fingerprint",
        run.datamodule.fingerprint().encode(),
    ):
        assert key in blob, key
    assert run.trainer.global_step == 3
    # the adapter (with its model card) and the data audit are W&B artifacts, kept in the offline run folder
    wandb_blob(wandb_file, b"data-audit-healthcare")
    blob = b"".join(p.read_bytes() for p in out.glob("wandb/offline-run-*/run-*.wandb"))
    assert f"adapter-{cfg.run_name}".encode() in blob and b"data-audit-healthcare" in blob
    card = (out / "adapter" / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "| loss |" in card
    assert "## Evaluation on test (model selection: validation)" in card
    assert run.datamodule.fingerprint() in card and "## Limits" in card and "records read" in card


def test_saved_adapter_reloads_with_identical_logits(make_cfg) -> None:
    cfg = make_cfg("logger=none", "optim.lr=1e-2")
    run = fit_and_evaluate(cfg)
    trained = run.module.model.eval()
    base, _ = load_model(cfg.model)
    reloaded = PeftModel.from_pretrained(base, Path(cfg.paths.output_dir) / "adapter").eval()
    ids = torch.tensor([run.datamodule.examples["validation"][0]["input_ids"]])
    with torch.no_grad():
        expected, got = trained(input_ids=ids).logits, reloaded(input_ids=ids).logits
        plain = load_model(cfg.model)[0].eval()(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-3), "training must have changed the model"


class RecordBatches(pl.Callback):
    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.first_step: int | None = None
        self.exp_avg: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.first_step = trainer.global_step
        state = trainer.optimizers[0].state
        if state:
            self.exp_avg = next(iter(state.values()))["exp_avg"].clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch["input_ids"].clone())


def test_resume_continues_step_optimizer_and_data_position(make_cfg, tmp_path: Path) -> None:
    common = ["logger=none", "trainer.val_check_interval=100", "data.max_samples=40"]
    full = RecordBatches()
    fit_and_evaluate(make_cfg(*common, "trainer.max_steps=14", output_dir=tmp_path / "full"), callbacks=[full])

    fit_and_evaluate(make_cfg(*common, "trainer.max_steps=12", output_dir=tmp_path / "first"))
    ckpt_path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 12
    assert all("lora_" in k for k in ckpt["state_dict"]), "checkpoints hold only the trainable weights"

    resumed = RecordBatches()
    fit_and_evaluate(
        make_cfg(*common, "trainer.max_steps=14", f"ckpt_path={ckpt_path}", output_dir=tmp_path / "second"), callbacks=[resumed]
    )
    assert resumed.first_step == 12
    saved = next(iter(ckpt["optimizer_states"][0]["state"].values()))["exp_avg"]
    assert resumed.exp_avg is not None and torch.equal(resumed.exp_avg, saved)
    # 40 records / batch 4 = 10 batches per epoch: step 12 is mid-epoch 2, and the resumed run must see
    # exactly the batches the uninterrupted run saw at steps 13 and 14.
    assert len(resumed.batches) == 2
    for got, want in zip(resumed.batches, full.batches[12:], strict=True):
        assert torch.equal(got, want)

    # ckpt_path=last finds the newest last.ckpt of an earlier run with this run_name
    again = make_cfg(*common, "trainer.max_steps=14", "ckpt_path=last", output_dir=tmp_path / "third")
    with open_dict(again):
        again.paths.log_dir = str(tmp_path / "logs")
    runs = tmp_path / "logs" / "train" / "2026-01-01"
    for name, age in (("10-00-00_healthcare_lora", 100), ("11-00-00_healthcare_lora", 0)):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(ckpt_path.read_bytes())
        os.utime(runs / name / "checkpoints" / "last.ckpt", (time.time() - age, time.time() - age))
    assert resolve_checkpoint(again) == str(runs / "11-00-00_healthcare_lora" / "checkpoints" / "last.ckpt")
    # a truncated last.ckpt is refused, naming the good checkpoints beside it
    newest = runs / "11-00-00_healthcare_lora" / "checkpoints"
    (newest / "step00008.ckpt").write_bytes(ckpt_path.read_bytes())
    (newest / "last.ckpt").write_bytes(ckpt_path.read_bytes()[:1000])
    with pytest.raises(DomainTuneError, match=r"cannot be read.*truncated.*ckpt_path=.*step00008\.ckpt"):
        resolve_checkpoint(again)
    with open_dict(again):
        again.paths.log_dir = str(tmp_path / "nothing")
    with pytest.raises(DomainTuneError, match="ckpt_path=last: no earlier 'healthcare_lora' run"):
        resolve_checkpoint(again)

    # the checkpoint knows what it was trained on: another adapter, data set or model is refused up front
    assert {"model", "adapter", "data", "trainable"} <= set(ckpt["domaintune"])
    for other, named in (
        ("adapter.peft.r=4", "adapter"),
        ("data.max_samples=30", "data"),
        ("model.init_seed=1", "model"),
    ):
        cfg = make_cfg(*common, other, "trainer.max_steps=14", f"ckpt_path={ckpt_path}", output_dir=tmp_path / "other")
        with pytest.raises(DomainTuneError, match=rf"trained with a different {named}.*same model, adapter and data"):
            fit_and_evaluate(cfg)


def test_freeze_trains_only_the_top_blocks(make_cfg) -> None:
    cfg = make_cfg("adapter=freeze", "adapter.train_top_n=1", "adapter.train_head=false")
    model, _ = load_model(cfg.model)
    model = apply_adapter(model, cfg.adapter, peft_config(cfg.adapter))
    trainable = {n.split(".")[2] if n.startswith("model.layers") else n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "model.norm.weight"}
    module = build(cfg.module, model=model, loss=LossOptions(True, None, True), identity={}, objective=instantiate(cfg.objective))
    assert sum(p.requires_grad for p in module.parameters()) == sum(p.requires_grad for p in model.parameters()) > 0


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_ddp_on_cpu_with_two_gloo_processes(tmp_path: Path) -> None:
    """Lightning's DDP launches a second process that re-runs train.py; rank 0 alone evaluates and reports."""
    out = script(
        "train.py",
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "logger=csv",
        f"paths.log_dir={tmp_path}",
    )
    [run_dir] = list(tmp_path.glob("train/*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and "loss" in metrics["tuned"]
    assert "distributed_backend=gloo" in out.stdout + out.stderr
    assert "MEMBER: 2/2" in out.stdout + out.stderr


def test_fsdp_clips_gradients_by_the_root_modules_norm(make_cfg) -> None:
    """Lightning's FSDP precision plugin refuses norm clipping; the module clips through the sharded root."""
    from types import SimpleNamespace

    from pytorch_lightning.strategies import FSDPStrategy

    cfg = make_cfg()
    module = build(
        cfg.module,
        model=apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)),
        loss=LossOptions(True, None, True),
        identity={},
        objective=instantiate(cfg.objective),
    )
    calls: list[float] = []
    strategy = FSDPStrategy.__new__(FSDPStrategy)
    strategy.model = SimpleNamespace(clip_grad_norm_=calls.append)
    module._trainer = SimpleNamespace(strategy=strategy)
    module.configure_gradient_clipping(None, 1.0, "norm")  # type: ignore[arg-type]
    assert calls == [1.0]


def test_multi_tensor_adamw_takes_the_same_steps_as_the_loop(make_cfg) -> None:
    import copy

    cfg = make_cfg()
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))
    results = []
    assert cfg.optim.optimizer.foreach is True
    for foreach in (False, True):
        m = copy.deepcopy(model)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = instantiate({**cfg.optim.optimizer, "foreach": foreach})([{"params": params, "weight_decay": 0.1}], lr=1e-2)
        for step in range(3):
            torch.manual_seed(step)
            for p in params:
                p.grad = torch.randn_like(p)
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(results[0], results[1], atol=1e-6, rtol=0)
    assert not torch.equal(results[0], torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]))


class SpoilAfter(pl.Callback):
    """Wrecks the trainable weights after a given step, so every later validation is worse than before."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    if p.requires_grad:
                        p.add_(torch.randn_like(p))


@pytest.mark.parametrize("weights", ["best", "last"])
def test_best_weights_are_restored_for_the_report_and_the_adapter(make_cfg, weights: str) -> None:
    """A run whose last validation is worse than an earlier one reports (and saves) the earlier weights."""
    from domaintune.core.callbacks import BestWeights

    cfg = make_cfg(
        "logger=none",
        "adapter=full",  # spoiling the (tied) head and embeddings hurts even the random tiny model's loss
        "trainer.precision=32-true",
        "trainer.max_steps=6",
        "trainer.val_check_interval=2",
        "data.val_max_samples=null",
        "eval.max_samples=null",
        "eval.split=[test,validation]",
        f"eval.weights={weights}",
        "callbacks.early_stopping.patience=10",
    )
    run = fit_and_evaluate(cfg, callbacks=[SpoilAfter(4)])
    assert run is not None and run.trainer.global_step == 6
    [best] = [c for c in run.trainer.callbacks if isinstance(c, BestWeights)]
    assert best.step is not None and best.step <= 4, "the spoiled steps 5-6 cannot be the best"
    info = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    tuned_val = run.rows["validation/loss"]["tuned"]
    if weights == "best":
        assert info["weights"].startswith(f"best, step {best.step} of 6")
        # the after-evaluation scored the restored weights: its validation loss is the best one seen in training
        assert tuned_val == pytest.approx(best.value, abs=1e-4)
        # ...and the saved model holds them (module parameter names are the model's, under `model.`)
        saved = AutoModelForCausalLM.from_pretrained(str(Path(cfg.paths.output_dir) / "adapter"))
        assert all(torch.equal(p, best.weights[f"model.{n}"]) for n, p in saved.named_parameters())
    else:
        assert info["weights"] == "last, step 6"
        assert tuned_val > best.value + 0.5, "the last weights are the spoiled ones"


class CrashAt(pl.Callback):
    """Stands in for a kill: the run dies at the start of a step, after the previous checkpoint was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_from_a_checkpoint_at_a_validation_step_keeps_that_check(make_cfg, tmp_path: Path) -> None:
    """Checkpoint and validation at the same step (the shipped defaults: both every 20 steps). Stock Lightning
    saves before that validation and skips it on resume, so best weights and early stopping miss a check; the
    StepCheckpoint saves after it. The resumed run must match the uninterrupted one check for check and weight
    for weight."""
    common = [
        "logger=none",
        "trainer.precision=32-true",
        "trainer.deterministic=true",
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "data.max_samples=40",
        "optim.lr=1e-2",
    ]
    fit_and_evaluate(make_cfg(*common, output_dir=tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_and_evaluate(make_cfg(*common, output_dir=tmp_path / "crashed"), callbacks=[CrashAt(8)])
    ckpt = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 8
    fit_and_evaluate(make_cfg(*common, f"ckpt_path={ckpt}", output_dir=tmp_path / "resumed"))

    whole = json.loads((tmp_path / "whole" / "curves.json").read_text())["val/loss"]
    resumed = json.loads((tmp_path / "resumed" / "curves.json").read_text())["val/loss"]
    assert [s for s, _ in resumed] == [s for s, _ in whole] == [4, 8, 12]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in whole], abs=1e-6)
    w_whole = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    w_resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    for name, tensor in w_whole.items():
        assert torch.allclose(tensor, w_resumed[name], atol=1e-6, rtol=0), name
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text())["weights"] for r in ("whole", "resumed")]
    assert metrics[0] == metrics[1]


def test_lora_upper_trains_only_the_upper_blocks(make_cfg) -> None:
    """adapter=lora_upper: LoRA on the listed upper blocks only (the shipped list is SmolLM2-135M's upper half,
    15-29 of 30; the tiny model has 2 blocks, so the test names its upper one)."""
    cfg = make_cfg("adapter=lora_upper", "adapter.peft.layers_to_transform=[1]", "trainer=debug", "logger=none")
    run = fit_and_evaluate(cfg)
    assert run is not None
    trained = [n for n, p in run.module.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".layers.1." in n for n in trained), trained[:4]
    assert {n.split(".layers.1.")[1].split(".")[1] for n in trained} == set(cfg.adapter.peft.target_modules)
    shipped = compose_train(["adapter=lora_upper"], Path(cfg.paths.output_dir))
    assert list(shipped.adapter.peft.layers_to_transform) == list(range(15, 30))
