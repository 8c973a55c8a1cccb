"""objective=choice: the labels' scores it trains on equal the evaluation's likelihood scorer's (choice/*), its
SFT term equals the SFT loss of the reference answer, a step raises the reference label's share, bad
combinations are refused, and a run trains, validates and reports from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from domaintune.core.checks import check_config
from domaintune.evaluation import choice, multiple_choice
from domaintune.models.loading import load_model
from domaintune.models.loss import LossOptions, example_nll
from domaintune.models.objectives import Choice
from domaintune.models.segments import continuation_logps
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build

LOSS = LossOptions(answer_only_logits=True, chunk_size=None, causal_padding=True)


@pytest.fixture
def labelled(make_cfg, tokenizer):
    cfg = make_cfg("data=fact_checking", "objective=choice")
    dm = build(cfg.data, tokenizer=tokenizer, choices=True)
    dm.prepare()
    model = load_model(cfg.model)[0].eval()
    return cfg, dm, model


@pytest.mark.parametrize("answer_only", [True, False])
def test_training_scores_equal_the_evaluations_label_scores(labelled, answer_only: bool) -> None:
    """The numbers the objective trains on are the numbers choice/accuracy is scored from: the same records'
    label log-likelihoods from the evaluation's scorer (lm-eval's definition; its answers end with the
    end-of-turn token here, so each label's is the evaluation's plus that token's log-probability)."""
    _, dm, model = labelled
    task = dm.tasks[""]
    opts = LossOptions(answer_only_logits=answer_only, chunk_size=None, causal_padding=True)
    batch = next(iter(dm.eval_dataloader("train", 6, choices=True)))
    n = len(batch["gold"])
    records, examples = dm.records["train"][:n], dm.examples["train"][:n]
    with torch.no_grad():
        losses, metrics = Choice("choice", sft_weight=0.5).per_record(model, batch, opts)
        trained = continuation_logps(model, batch, answer_only).view(n, -1)
    items = choice.label_items(dm, task, records)
    evaluated = multiple_choice.item_loglikelihoods(model, dm.tokenizer, items, "", 4, True, answer_only, "labels")
    # the evaluation's answers stop before the end-of-turn token, the training's include it
    end = dm.renderer.stop_token_ids()
    assert all(ex["choices"][k][-1] in end for ex in examples for k in range(len(task.labels)))
    assert [ex["gold"] for ex in examples] == [task.labels.index(r["label"]) for r in records]
    with torch.no_grad():
        sft, counts = example_nll(model, {k: v for k, v in next(iter(dm.eval_dataloader("train", n))).items()}, opts)
    gold = batch["gold"]
    # the reference answer's summed log-probability is SFT's summed NLL of the same example (same positions)
    assert torch.allclose(trained.gather(1, gold[:, None]).squeeze(1), -sft, atol=2e-3)
    assert torch.allclose(metrics["sft_loss"], sft / counts, atol=1e-4)
    for row, ev in zip(trained.tolist(), evaluated, strict=True):
        # dropping the end-of-turn token can only raise a log-likelihood, and the ranking is the evaluation's
        # when the end-of-turn token costs the same after every label (checked on the argmax it changes)
        assert all(t <= e + 1e-3 for t, e in zip(row, ev, strict=True))
    ce = torch.nn.functional.cross_entropy(trained, gold, reduction="none")
    assert torch.allclose(losses, ce + 0.5 * sft / counts, atol=1e-4)


def test_a_choice_step_raises_the_reference_labels_share(labelled) -> None:
    cfg, dm, model = labelled
    from domaintune.models.adapters import apply_adapter, peft_config

    torch.manual_seed(0)
    model = apply_adapter(model, cfg.adapter, peft_config(cfg.adapter)).train()
    batch = next(iter(dm.eval_dataloader("train", 4, choices=True)))
    objective = Choice("choice", sft_weight=0.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    before, _ = objective.per_record(model, batch, LOSS)
    for _ in range(3):
        loss, logged = objective.training_loss(model, batch, LOSS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, _ = objective.per_record(model, batch, LOSS)
    assert after.mean() < before.mean() - 1e-3  # the reference labels' cross-entropy fell
    assert set(logged) == {"choice_ce", "sft_loss", "choice_accuracy"}


def test_choice_refuses_data_without_labels_and_packing(make_cfg, tokenizer) -> None:
    with pytest.raises(DomainTuneError, match=r"objective=choice .* has a task without a label set"):
        check_config(make_cfg("objective=choice", "data=healthcare"))
    with pytest.raises(DomainTuneError, match=r"data.packing=true with objective=choice"):
        check_config(make_cfg("objective=choice", "data=fact_checking", "data.packing=true"))
    with pytest.raises(DomainTuneError, match=r"objective.sft_weight=-1"):
        check_config(make_cfg("objective=choice", "data=fact_checking", "objective.sft_weight=-1"))
    objective = instantiate(make_cfg("objective=choice").objective)
    assert objective.needs_choices and not objective.needs_pairs and not objective.token_nll


def test_choice_run_trains_validates_and_reports(make_cfg) -> None:
    from domaintune.core.pipeline import fit_and_evaluate

    cfg = make_cfg("objective=choice", "data=fact_checking", "logger=csv", "trainer.max_steps=3")
    run = fit_and_evaluate(cfg)
    assert run is not None and run.trainer.global_step == 3
    out = Path(cfg.paths.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"choice/accuracy", "choice/macro_f1"} <= set(metrics["tuned"])
    logged = (next(out.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"train/choice_ce", "train/sft_loss", "train/choice_accuracy", "val/loss"} <= set(logged)
    assert "val/perplexity" not in logged  # val/loss is not a token NLL here
    assert "- objective: `choice (sft_weight 1.0)`" in (out / "adapter" / "README.md").read_text()
