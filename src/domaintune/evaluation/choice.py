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

from torch import nn

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


def choice_scores(
    model: nn.Module,
    data: LabelledSet,
    task: Task,
    records: list[dict[str, Any]],
    batch_size: int,
    share_context: bool,
    loss: LossOptions,
) -> dict[str, Evidence]:
    """accuracy and macro_f1 (0-100, per record) of the most likely label; the macro-F1 evidence carries the
    (gold, answer) pairs, so the refinement report draws its confusion matrix and per-label F1 from it."""
    items = label_items(data, task, records)
    # the context is used verbatim: no delimiter (the assistant header already ends the prompt)
    lls = multiple_choice.item_loglikelihoods(
        model, data.tokenizer, items, "", batch_size, share_context, loss.answer_only_logits, "labels"
    )
    guess = [max(range(len(ll)), key=ll.__getitem__) for ll in lls]
    labels = list(task.labels or [])
    return label_evidence([i.origin for i in items], [i.answer for i in items], guess, labels)


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
