"""Classification by likelihood: each label's log-likelihood as the answer to a record's prompt.

Free generation scores a label task through the answer's wording (a label the parser cannot find is wrong,
a label named in passing counts). Scoring every label as a continuation of the same chat prompt, and taking
the most likely, asks the model the question itself. It reuses the multiple-choice scorer (lm-eval's
`loglikelihood`, tests/evaluation compare it with lm-eval) with the rendered chat prompt as the context and
each label's response, rendered by the task's own response template, as a choice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from domaintune.data.formats import Task
from domaintune.evaluation import multiple_choice
from domaintune.evaluation.evidence import Evidence
from domaintune.evaluation.metrics import label_evidence
from domaintune.models.loss import LossOptions


class LabelledSet(Protocol):
    """What label scoring needs of the data (the DataModule is one)."""

    tokenizer: Any
    renderer: Any

    def conversation(self, rec: dict[str, Any]) -> list[dict[str, str]]: ...


def label_items(data: LabelledSet, task: Task, records: list[dict[str, Any]]) -> list[multiple_choice.MCItem]:
    """One multiple-choice item per record: the rendered prompt (system and user turns, the assistant's header)
    as the question, the task's response for each label as the choices, the gold label's index as the answer."""
    assert task.labels, "label scoring needs the task's label set"
    items = []
    for rec in records:
        conv = data.conversation(rec)
        context = data.renderer.render(conv[:-1], add_generation_prompt=True)
        choices = [task.reference({**rec, "label": label}) for label in task.labels]
        items.append(multiple_choice.MCItem(context, choices, task.labels.index(rec["label"]), rec["_src"]))
    return items


def label_loglikelihoods(
    model: nn.Module,
    data: LabelledSet,
    task: Task,
    records: list[dict[str, Any]],
    batch_size: int,
    share_context: bool,
    loss: LossOptions,
) -> tuple[list[multiple_choice.MCItem], torch.Tensor]:
    """The items and each label's summed log-likelihood ([records, labels]) as the answer to the record's prompt."""
    items = label_items(data, task, records)
    # the context is used verbatim: no delimiter (the assistant header already ends the prompt)
    lls = multiple_choice.item_loglikelihoods(
        model, data.tokenizer, items, "", batch_size, share_context, loss.answer_only_logits, "labels"
    )
    return items, torch.tensor(lls, dtype=torch.float64)


def choice_evidence(items: list[multiple_choice.MCItem], scores: torch.Tensor, labels: list[str]) -> dict[str, Evidence]:
    """accuracy and macro_f1 (0-100, per record) of the highest-scoring label; the macro-F1 evidence carries the
    (gold, answer) pairs, so the refinement report draws its confusion matrix and per-label F1 from it."""
    guess = scores.argmax(dim=1).tolist()
    return label_evidence([i.origin for i in items], [i.answer for i in items], guess, labels)


def fit_offsets(lls: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """One additive offset per label (the first fixed at 0) minimising the cross-entropy of softmax(lls + offsets)
    against the gold labels: a bias-only recalibration of the label prior.

    Why: a small model's likeliest label swings as a whole between runs (on Check-COVID validation, one run
    answered 'false' for 166 of 202 claims, another 'true' for 144 of 202) while its ranking of the claims within
    each label still carries the evidence; moving the labels' priors, fitted on held-out records, keeps the
    ranking and removes the swing. It is "contextual calibration" (Zhao et al., 2021) fitted by likelihood on
    labelled held-out data. The fit is convex in the offsets; torch's L-BFGS solves it (no library ships a
    logistic fit with the weights fixed at 1)."""
    k = lls.shape[1]
    free = torch.zeros(k - 1, dtype=torch.float64, requires_grad=True)
    gold = gold.long()
    optimizer = torch.optim.LBFGS([free], max_iter=100, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        offsets = torch.cat([free.new_zeros(1), free])
        # the tiny ridge keeps the offsets finite when a label is missing from the records fitted on
        loss = F.cross_entropy(lls + offsets, gold) + 1e-4 * free.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # evaluation runs under inference_mode elsewhere; the fit needs autograd
        optimizer.step(closure)
    return torch.cat([free.new_zeros(1), free]).detach()


def cross_fitted(lls: torch.Tensor, gold: torch.Tensor, folds: int) -> torch.Tensor:
    """Calibrated scores for the records the offsets are fitted on: record i is in fold i % folds and is scored
    with offsets fitted on the other folds only, so no record is scored by a fit that saw its own label."""
    n = lls.shape[0]
    fold = torch.arange(n) % max(1, min(folds, n))
    out = lls.clone()
    for f in fold.unique().tolist():
        held = fold == f
        if bool((~held).any()):
            out[held] = lls[held] + fit_offsets(lls[~held], gold[~held])
    return out


def trivial_baseline(records: list[dict[str, Any]], labels: list[str]) -> tuple[float, str]:
    """The best accuracy (0-100) a model that ignores its input can reach on these records: always answering
    the majority label, or guessing uniformly (chance), whichever is higher; and how it was found."""
    counts = Counter(r["label"] for r in records)
    label, top = counts.most_common(1)[0]
    majority = 100.0 * top / max(len(records), 1)
    chance = 100.0 / max(len(labels), 1)
    if majority >= chance:
        return majority, f"always '{label}' (the majority label: {top} of {len(records)})"
    return chance, f"chance among {len(labels)} labels"
