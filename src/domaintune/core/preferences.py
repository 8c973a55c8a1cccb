"""Preference pairs from a finished run's own failures (`scripts/make_preferences.py run_dir=<run>`).

The tuned model answers (greedy) a sample of the run's *training* records; each answer is scored against the
reference with the domain's primary metric (for a label set: right or wrong label), and the worst answers
become pairs {prompt, chosen: the reference, rejected: the model's answer}. For a label set, `label_balance`
makes every label rejected as often as it is chosen (the model's wrong label where its quota allows, another
wrong label otherwise): on real fact-checking data, pairs of the model's wrong labels alone rejected `true` and
`false` far more often than `not_enough_info`, and DPO learned the prior instead of the evidence (it answered
`not_enough_info` to every test claim; RESULTS.md, issue 22). Validation and test records never
feed a training pair. The pairs' test split is the run's own evaluation: its test records with the tuned
model's answers as `rejected` (read from the run's generations.jsonl, not generated again), so a DPO run on
these pairs is scored on the same test questions as the run it refines.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
from omegaconf import DictConfig

from domaintune.core.inference import load_for_inference
from domaintune.data.datamodule import DomainDataModule
from domaintune.data.formats import Task
from domaintune.evaluation import metrics as gen_metrics
from domaintune.evaluation.generation import generate, with_answer_limit
from domaintune.evaluation.settings import Generation
from domaintune.utils.config import settings
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build


@dataclasses.dataclass(frozen=True)
class Choice:
    """How failures are chosen (conf/make_preferences.yaml)."""

    max_records: int | None
    worst_share: float
    validation_share: float
    seed: int
    label_balance: bool


def balanced_rejections(golds: list[str], answers: list[str], labels: list[str]) -> list[str | None]:
    """A rejected label per record, each label rejected exactly as often as it is chosen (its gold count),
    with as many of the model's own wrong answers as that allows (those pairs are its real failures).

    Why a quota equal to the gold count: a DPO pair raises its chosen label and lowers its rejected one, so equal
    counts leave each label's net push at zero and the model can only gain by reading the input, not by shifting
    its prior. Which record rejects which label is a transportation problem (a greedy pass can use up a label's
    quota that another gold label needed), solved as a min-cost flow with networkx: label-to-label edges carry
    records, each record whose own wrong answer is the rejected label saves one unit of cost. None for every record
    when no balanced assignment exists (a label that is more than half of the golds cannot be rejected often
    enough by the others; the audit counts the records).
    """
    gold_count = Counter(golds)
    own = Counter((g, a) for g, a in zip(golds, answers, strict=True) if a != g and a in labels)
    graph = nx.DiGraph()
    for g, n in gold_count.items():
        graph.add_edge("source", ("gold", g), capacity=n, weight=0)
        graph.add_edge(("rejected", g), "sink", capacity=n, weight=0)
        for r in gold_count:
            if r != g:
                # two routes from gold g to rejected r: through the model's own answers (cost -1 each, as many
                # as there are), or any record of gold g (cost 0)
                graph.add_edge(("gold", g), ("own", g, r), capacity=own[g, r], weight=-1)
                graph.add_edge(("own", g, r), ("rejected", r), capacity=own[g, r], weight=0)
                graph.add_edge(("gold", g), ("rejected", r), capacity=n, weight=0)
    flow = nx.max_flow_min_cost(graph, "source", "sink")
    if sum(flow["source"].values()) < len(golds):
        return [None] * len(golds)
    own_left = {(g, r): flow[("gold", g)][("own", g, r)] for g in gold_count for r in gold_count if r != g}
    any_left = {(g, r): flow[("gold", g)][("rejected", r)] for g in gold_count for r in gold_count if r != g}
    out: list[str | None] = [None] * len(golds)
    for i, (g, a) in enumerate(zip(golds, answers, strict=True)):
        if own_left.get((g, a), 0) > 0:
            out[i], own_left[g, a] = a, own_left[g, a] - 1
    for i, g in enumerate(golds):
        if out[i] is None:
            # records left over: the gold label's remaining flow, own-answer units not matched to a record first
            r = next(r for r in labels if r != g and own_left.get((g, r), 0) + any_left.get((g, r), 0) > 0)
            left = own_left if own_left.get((g, r), 0) > 0 else any_left
            out[i], left[g, r] = r, left[g, r] - 1
    return out


def per_record_scores(task: Task, primary: str, outputs: list[str], records: list[dict[str, Any]]) -> list[float]:
    """Each answer's score by the run's primary metric (a label task: 100 right, 0 wrong), higher is better."""
    if task.labels:
        found = gen_metrics.score_records(["label"], task, outputs, records)
        return list(found["accuracy"].array())
    name = primary.removeprefix("gen/")
    families = [f for f in gen_metrics.DEFAULTS.get(task.type, []) if f != "length"]
    found = gen_metrics.score_records(families, task, outputs, records)
    if name not in found or found[name].kind != "mean":
        name = "rougeL"  # a corpus-level primary (chrF, BLEU) has no per-answer score: rank by ROUGE-L
    return list(found[name].array())


def failures(cfg: DictConfig, choice: Choice) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """(pairs per split, the audit: counts and reasons) for the run `cfg.run_dir` (its config already merged)."""
    model, tok, _ = load_for_inference(cfg)
    dm: DomainDataModule = build(cfg.data, tokenizer=tok)
    dm.prepare()
    if len(dm.tasks) != 1:
        raise DomainTuneError(
            "make_preferences works on a single-source run; this run trained on a mixture.",
            "Make pairs from each component's own run.",
        )
    task = next(iter(dm.tasks.values()))
    if task.type in ("text", "preference", "chat"):
        raise DomainTuneError(
            f"make_preferences needs a task with one reference answer per record; this run's task type is {task.type}.",
            "Use a run of a qa, instruction, summarization, generation or fact_check data config.",
        )
    records = list(dm.records["train"])
    random.Random(choice.seed).shuffle(records)
    records = records[: choice.max_records] if choice.max_records else records
    options = with_answer_limit(dm, settings(Generation, cfg.eval.generation, "eval.generation"))[0].options()
    convs = [dm.conversation(r)[:-1] for r in records]
    outs, _ = generate(model, tok, dm.renderer, convs, options, merge_adapter=True, desc="answer training records")
    primary = gen_metrics.primary_metric(dm.primary_metric, [task.type])
    scores = per_record_scores(task, primary, [o.text for o in outs], records)
    skipped: Counter[str] = Counter()
    texts = [o.text.strip() for o in outs]
    balance = bool(task.labels) and choice.label_balance
    candidates = (balanced if balance else own_failures)(task, records, texts, scores, skipped)
    candidates.sort(key=lambda c: c[0])
    keep = len(candidates) if task.labels or not candidates else max(1, round(choice.worst_share * len(candidates)))
    if keep < len(candidates):
        skipped["above the worst share"] += len(candidates) - keep
    pairs = [pair(task, rec, rejected, score) for score, rec, rejected, _ in candidates[:keep]]
    random.Random(choice.seed).shuffle(pairs)
    n_val = max(1, round(choice.validation_share * len(pairs))) if len(pairs) > 1 else 0
    out = {"validation": pairs[:n_val], "train": pairs[n_val:], "test": test_pairs(Path(cfg.run_dir), task)}
    audit = {
        "run": str(cfg.run_dir),
        "primary": primary,
        "training records answered": len(records),
        "pairs": {k: len(v) for k, v in out.items()},
        "skipped": dict(skipped),
        "worst_share": choice.worst_share,
        "max_new_tokens": options["max_new_tokens"],
        "max_length": dm.recipe.max_length,
        "labels": task.labels,
        "label_balance": balance,
        "rejected labels": dict(Counter(c[2] for c in candidates[:keep])) if task.labels else None,
        "rejected = the model's own answer": sum(c[3] for c in candidates[:keep]),
        "mean score of the kept answers": sum(c[0] for c in candidates[:keep]) / max(keep, 1),
        "mean score of all answers": sum(scores) / max(len(scores), 1),
    }
    if not out["train"]:
        raise DomainTuneError(
            f"No training pair was made from {len(records)} answered records (skipped: {dict(skipped)}).",
            "Answer more records (max_records=...), keep a larger share (worst_share=...), or for a label set "
            "whose one label is over half the records, label_balance=false.",
        )
    return out, audit


Candidate = tuple[float, dict[str, Any], str, bool]  # (score, record, rejected answer, rejected is the model's own)


def own_failures(task: Task, records: list[dict[str, Any]], texts: list[str], scores: list[float],
                 skipped: Counter[str]) -> list[Candidate]:  # fmt: skip
    """Every scored answer that is not empty, not a right label and not the reference word for word."""
    out = []
    for rec, text, score in zip(records, texts, scores, strict=True):
        if not text:
            skipped["empty answer"] += 1
        elif task.labels and score >= 100:
            skipped["right label"] += 1
        elif text == task.reference(rec).strip():
            skipped["answer equals the reference"] += 1
        else:
            out.append((score, rec, text, True))
    return out


def balanced(task: Task, records: list[dict[str, Any]], texts: list[str], scores: list[float],
             skipped: Counter[str]) -> list[Candidate]:  # fmt: skip
    """Every answered record of a label task, its rejected label from `balanced_rejections`."""
    golds = [task.reference(r).strip() for r in records]
    rejected = balanced_rejections(golds, texts, list(task.labels))
    if None in rejected:
        skipped["no balanced assignment (one label is over half the records)"] += rejected.count(None)
    return [(s, rec, r, r == t) for s, rec, r, t in zip(scores, records, rejected, texts, strict=True) if r is not None]


def pair(task: Any, rec: dict[str, Any], rejected: str, score: float) -> dict[str, Any]:
    conv = task.conversation(rec)
    system = conv[0]["content"] if conv[0]["role"] == "system" else None
    prompt = [m for m in conv[:-1] if m["role"] != "system"]
    return {"prompt": prompt, "chosen": conv[-1]["content"], "rejected": rejected, "system": system,
            "source": rec["_src"], "rejected_score": score}  # fmt: skip


def test_pairs(run_dir: Path, task: Any) -> list[dict[str, Any]]:
    """The run's evaluated test answers as pairs (reference over the tuned model's answer): the same test
    questions the run was scored on, so the refined model's report reads against them."""
    path = run_dir / "generations.jsonl"
    if not path.exists():
        raise DomainTuneError(f"'{run_dir}' has no generations.jsonl.", "Pass a run folder written by train.py.")
    out = []
    for line in path.read_text().splitlines():
        g = json.loads(line)
        rejected = (g.get("tuned") or "").strip()
        if task.labels and rejected == g["reference"].strip():
            # a right label is still a test question: its pair is against the next label, so the test set is all
            # the run's questions and not only those it got wrong (which would flatter any change)
            rejected = task.labels[(task.labels.index(g["reference"].strip()) + 1) % len(task.labels)]
        if not rejected or rejected == g["reference"].strip():
            continue
        out.append({"prompt": g["prompt"], "chosen": g["reference"], "rejected": rejected, "system": task.system_prompt,
                    "source": g["id"]})  # fmt: skip
    return out


def write_pairs(folder: Path, pairs: dict[str, list[dict[str, Any]]], audit: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in pairs.items():
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (folder / "pairs_audit.json").write_text(json.dumps(audit, indent=2))
