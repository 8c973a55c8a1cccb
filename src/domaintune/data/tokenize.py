"""Stage: render each record through the chat template and tokenise it, with the loss mask and its audit.

Records whose answer does not fit (`preprocess.too_long: drop`) or that keep no trainable token (the prompt
alone fills max_length) are removed and counted; truncated ones are counted as changed.
"""

from __future__ import annotations

from typing import Any

from domaintune.data.audit_report import Audit, StepReport
from domaintune.data.chat import ChatRenderer
from domaintune.data.formats import Task
from domaintune.models.loss import IGNORE
from domaintune.utils.errors import DomainTuneError

Split = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def tokenize_split(
    split: str, records: list[dict[str, Any]], task: Task, renderer: ChatRenderer, too_long: str, audit: Audit
) -> Split:
    """(kept records, their examples {input_ids, labels}), aligned; the step goes into `audit` under `split`."""
    if task.type == "text":
        encoded = renderer.encode_texts([task.text(r) for r in records])
    else:
        encoded = renderer.encode_many([task.conversation(r) for r in records], task.train_on)
    # preference pairs: the worse answer after the same prompt, encoded alike (DPO/ORPO train on both sides)
    rejected = (
        renderer.encode_many([task.rejected_conversation(r) for r in records], "last") if task.type == "preference" else None
    )
    report = StepReport("tokenize", len(records), 0)
    kept_records, kept = [], []
    # a model learns to stop only if each answer's end-of-turn token is trained: checked on every whole example
    stops = set(renderer.stop_token_ids()) if task.type != "text" else set()
    for i, (rec, enc) in enumerate(zip(records, encoded, strict=True)):
        sides = [enc] if rejected is None else [enc, rejected[i]]
        for side in sides:
            if stops and not side.truncated and side.n_trained and [t for t in side.labels if t != IGNORE][-1] not in stops:
                raise DomainTuneError(
                    f"{rec['_src']}: the answer's last trained token is not the chat template's end-of-turn token, so "
                    "the model would never learn to stop answering.",
                    "Use a chat template whose assistant turn ends with a single end-of-turn token (model.chat_template, "
                    "e.g. ChatML).",
                )
        reason = None
        if any(s.truncated for s in sides) and too_long == "drop":
            reason = "too_long"
        elif any(s.n_trained == 0 for s in sides):
            reason = "no_trainable_tokens"  # the prompt alone fills max_length
        if reason:
            report.remove(rec["_src"], reason)
            continue
        if any(s.truncated for s in sides):
            report.change(rec["_src"], f"truncated to {renderer.max_length} tokens")
        kept_records.append(rec)
        example = {"input_ids": enc.input_ids, "labels": enc.labels}
        if rejected is not None:
            example |= {"rejected_input_ids": rejected[i].input_ids, "rejected_labels": rejected[i].labels}
        kept.append(example)
    report.records_out = len(kept)
    audit.add(split, report)
    if not kept:
        raise DomainTuneError(
            f"No {split} example has answer tokens left within data.max_length={renderer.max_length}.",
            "Raise data.max_length or shorten the prompts.",
        )
    return kept_records, kept
