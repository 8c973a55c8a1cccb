"""Preference objectives: DPO's loss and metrics equal TRL's DPOTrainer on the same batch and weights; ORPO's
odds-ratio term equals TRL's ORPOTrainer's; a DPO step moves a planted pair's margin the right way; the pair
data is audited; a DPO run trains and reports from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from domaintune.core.checks import check_config
from domaintune.models.adapters import apply_adapter, peft_config
from domaintune.models.loading import load_model
from domaintune.models.loss import IGNORE, LossOptions
from domaintune.models.objectives import DPO, ORPO, answer_logps
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from tests.conftest import require, write_jsonl

LOSS = LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True)


@pytest.fixture
def pairs(make_cfg, tokenizer):
    """A LoRA policy moved away from its (adapter-off) reference, and a batch of 4 sample pairs."""
    cfg = make_cfg("data=preferences", "objective=dpo")
    dm = build(cfg.data, tokenizer=tokenizer, pairs=True)
    dm.prepare()
    batch = next(iter(dm.eval_dataloader("train", 4, pairs=True)))
    torch.manual_seed(0)
    model = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a fresh LoRA is the reference itself: move it so the ratios are not zero
    with torch.no_grad(), model.disable_adapter():
        batch["ref_logps"] = answer_logps(model, batch, LOSS)[0]
    return model, batch, tokenizer


def test_dpo_loss_and_metrics_equal_trl(pairs, tmp_path: Path) -> None:
    require("trl", "the dev extra: pip install -e '.[dev]'")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, batch, tok = pairs
    # the reference log-probabilities given to both (TRL's precomputed-reference path), so both compare the
    # same policy with the same reference (TRL would otherwise copy this already-trained adapter as "ref")
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, report_to=[], use_cpu=True, bf16=False, precompute_ref_log_probs=True)
    data = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    trainer.model.train()  # TRL logs under "train" when the model trains (dropout is 0 in the tiny LoRA)
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": (batch["labels"] != IGNORE).long(),
        "ref_chosen_logps": batch["ref_logps"][:4],
        "ref_rejected_logps": batch["ref_logps"][4:],
    }
    for loss_type in ("sigmoid", "ipo", "hinge"):
        ours, metrics = DPO(name="dpo", beta=0.1, loss_type=loss_type).pair_loss(model, batch, LOSS)
        trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
        theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
        assert ours.mean().item() == pytest.approx(theirs.item(), abs=1e-5), loss_type
        logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        for mine, trl_name in [
            ("rewards/chosen", "rewards/chosen"),
            ("rewards/rejected", "rewards/rejected"),
            ("rewards/accuracy", "rewards/accuracies"),
            ("rewards/margin", "rewards/margins"),
            ("logps/chosen", "logps/chosen"),
            ("logps/rejected", "logps/rejected"),
        ]:
            assert metrics[mine].float().mean().item() == pytest.approx(logged[trl_name], abs=1e-4), (loss_type, mine)


def test_orpo_odds_ratio_term_equals_trl(pairs) -> None:
    require("trl", "the dev extra: pip install -e '.[dev]'")
    from trl.experimental.orpo import ORPOTrainer

    model, batch, _ = pairs
    losses, metrics = ORPO(name="orpo", beta=0.1).pair_loss(model, batch, LOSS)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    avg = ORPOTrainer.get_batch_logps(logits, batch["labels"], average_log_prob=True)
    fake = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    ratio_losses, chosen_r, rejected_r, _, _ = ORPOTrainer.odds_ratio_loss(fake, avg[:4], avg[4:])
    assert torch.allclose(metrics["log_odds_ratio"], ratio_losses / 0.1, atol=1e-5)
    assert torch.allclose(metrics["rewards/chosen"], chosen_r, atol=1e-5)
    assert torch.allclose(metrics["rewards/rejected"], rejected_r, atol=1e-5)
    # the loss: mean answer-token NLL of the chosen answers minus the mean odds-ratio term (TRL adds prompt tokens
    # to its NLL term; ours is the answer tokens, as the paper and objective=sft)
    labels = batch["labels"][:4, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:4, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1))
    assert losses.mean().item() == pytest.approx((nll - ratio_losses.mean()).item(), abs=1e-5)


def test_a_dpo_step_moves_the_planted_pairs_margin_the_right_way(pairs) -> None:
    model, batch, _ = pairs
    dpo = DPO(name="dpo", beta=0.1)
    model.train()
    before = dpo.pair_loss(model, batch, LOSS)[1]["rewards/margin"].mean()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = dpo.training_loss(model, batch, LOSS)
    loss.backward()
    optimizer.step()
    after = dpo.pair_loss(model, batch, LOSS)[1]["rewards/margin"].mean()
    assert after > before, "a step on the DPO loss widens the chosen-over-rejected margin"


def test_pairs_are_audited(make_cfg, tokenizer, tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}."} for i in range(8)]
    rows[2]["rejected"] = rows[2]["chosen"]  # teaches nothing
    rows[3]["rejected"] = ""  # one side empty
    rows[4]["prompt"] = [{"role": "user", "content": "Conversational question?"}]
    rows[5]["chosen"] = [{"role": "assistant", "content": "Conversational answer."}]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    cfg = make_cfg(
        "data=preferences", f"data.dir={tmp_path}", "data.preprocess.leakage=false", "data.preprocess.dedup.near=false"
    )
    dm = build(cfg.data, tokenizer=tokenizer, pairs=True)
    dm.prepare()
    [fields] = [s for s in dm.audit.splits["train"] if s.step == "fields"]
    assert fields.removed == {"identical_pair": 1, "missing_rejected": 1}
    assert len(dm.examples["train"]) == 6 and all("rejected_input_ids" in e for e in dm.examples["train"])
    conversational = next(r for r in dm.records["train"] if isinstance(r["prompt"], list))
    assert dm.conversation(conversational)[-2] == {"role": "user", "content": "Conversational question?"}


def test_label_pairs_report_their_chosen_labels(make_cfg, tokenizer, tmp_path: Path) -> None:
    """Pairs over a label set (make_preferences on a fact-checking run) have no `label` field: the data report
    counts their chosen labels, so DPO on such pairs starts (it raised KeyError 'label')."""
    labels = ["true", "false", "not_enough_info"]
    rows = [{"prompt": f"Claim {i}?", "chosen": labels[i % 3], "rejected": labels[(i + 1) % 3]} for i in range(9)]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    cfg = make_cfg(
        "data=preferences", f"data.dir={tmp_path}", 'data.task.labels=["true","false","not_enough_info"]',
        "data.preprocess.leakage=false", "data.preprocess.dedup.near=false",
    )  # fmt: skip
    dm = build(cfg.data, tokenizer=tokenizer, pairs=True)
    dm.prepare()
    assert dm.report()["labels"]["train"] == {"true": 3, "false": 3, "not_enough_info": 3}


def test_a_preference_objective_refuses_data_without_pairs(make_cfg) -> None:
    with pytest.raises(DomainTuneError, match=r"objective=dpo trains on preference pairs.*task type qa") as err:
        check_config(make_cfg("objective=dpo", "data=healthcare"))
    assert "scripts/make_preferences.py" in err.value.paragraph()
    with pytest.raises(DomainTuneError, match=r"objective\.beta=0"):
        check_config(make_cfg("objective=dpo", "data=preferences", "objective.beta=0"))
    with pytest.raises(DomainTuneError, match="Unknown DPO loss type 'kto'"):
        check_config(make_cfg("objective=dpo", "data=preferences", "objective.loss_type=kto"))
    assert instantiate(make_cfg("objective=orpo").objective).needs_pairs


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_run_trains_logs_and_reports(objective: str, make_cfg) -> None:
    from domaintune.core.pipeline import fit_and_evaluate

    cfg = make_cfg(f"objective={objective}", "data=preferences", "logger=csv", "optim.lr=1e-2", "trainer.max_steps=4")
    run = fit_and_evaluate(cfg)
    assert run is not None and run.trainer.global_step == 4
    out = Path(cfg.paths.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary"] == "pref/accuracy" and {"pref/accuracy", "pref/margin"} <= set(metrics["tuned"])
    logged = (next(out.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"train/rewards/accuracy", "train/rewards/margin", "train/logps/chosen", "val/loss"} <= set(logged)
    assert f"- objective: `{objective} (beta 0.1" in (out / "adapter" / "README.md").read_text()
