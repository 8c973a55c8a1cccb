"""The refinement report (`analysis.md`): what went wrong or right, per example, and which change to try.

Every run writes it, and `scripts/analyze.py run_dir=...` rewrites it from a run folder alone: it reads only
the files a run leaves (per_example.jsonl, generations.jsonl, metrics.json, curves.json, data_report.json),
so it also works on runs copied from another machine. Each finding names a config change; the common ones
are `experiment=` presets (conf/experiment/more_steps.yaml, regularize.yaml, longer_context.yaml).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from domaintune.reporting.report import direction
from domaintune.utils.errors import DomainTuneError


@dataclass
class Finding:
    topic: str
    text: str
    change: str  # the config change (or data change) to try, in words
    # the same change as command-line overrides that `scripts/refine.py` runs (empty: not a config change,
    # e.g. "add training records labelled X", or not a training change, e.g. scoring more examples)
    overrides: list[str] = field(default_factory=list)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _short(text: str | None, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return (text[: n - 1] + "…" if len(text) > n else text).replace("|", "\\|")


# ------------------------------------------------------------------------------------------ per example
def largest_changes(per_example: list[dict[str, Any]], prompts: dict[str, str], top: int) -> list[str]:
    """Markdown: per quality metric, the examples the tuned model got most worse and most better on."""
    values: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for line in per_example:
        if line["value"] is not None:
            values[line["metric"]][line["stage"]][line["id"]] = line["value"]
    out = []
    for metric, stages in values.items():
        sign = direction(metric)
        if not sign or metric.endswith("perplexity") or not {"base", "tuned"} <= stages.keys():
            continue
        common = [i for i in stages["base"] if i in stages["tuned"]]
        gain = sorted(((stages["tuned"][i] - stages["base"][i]) * sign, i) for i in common)
        worst = [g for g in gain[:top] if g[0] < 0]
        best = [g for g in reversed(gain[-top:]) if g[0] > 0]
        if not worst and not best:
            continue
        out += [f"### {metric}", "", "| | example | base | tuned | prompt |", "|---|---|---:|---:|---|"]
        for label, rows in (("worse", worst), ("better", best)):
            for _, i in rows:
                b, t = stages["base"][i], stages["tuned"][i]
                out.append(f"| {label} | `{i}` | {b:.4g} | {t:.4g} | {_short(prompts.get(i))} |")
        out.append("")
    return out


# ------------------------------------------------------------------------------------------ labels
def _accuracy(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Accuracy of (gold, answer) rows and its 95% margin (normal approximation to the binomial)."""
    accuracy = sum(x["row"][0] == x["row"][1] for x in rows) / len(rows)
    return accuracy, 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / len(rows))


def label_analysis(per_example: list[dict[str, Any]], outputs: dict[str, str]) -> tuple[list[str], list[Finding]]:
    """Confusion matrix, per-label F1 and unparseable answers of the tuned model (fact checking)."""
    lines: list[str] = []
    findings: list[Finding] = []
    by_metric: dict[str, list[dict[str, Any]]] = defaultdict(list)  # in the order the metrics come
    for x in per_example:
        if x["kind"] == "macro_f1" and x["stage"] == "tuned":
            by_metric[x["metric"]].append(x)
    # calibrated label scores whose accuracy is beyond chance (choice/calibrated/*), read before their raw ones
    beyond_chance = {}
    for metric, mine in by_metric.items():
        accuracy, margin = _accuracy(mine)
        if "/calibrated/" in metric and accuracy - margin > 1 / len(mine[0]["params"]["labels"]):
            beyond_chance[metric] = accuracy
    for metric, mine in by_metric.items():
        labels = list(mine[0]["params"]["labels"])
        names = [*labels, "(unparseable)"]
        counts = Counter((x["row"][0], x["row"][1]) for x in mine)
        lines += [f"### {metric.removesuffix('macro_f1')}labels (tuned model, rows: gold, columns: answer)", ""]
        lines += ["| gold \\ answer | " + " | ".join(names) + " | F1 |", "|---|" + "---:|" * (len(names) + 1)]
        f1s = {}
        for g, gold in enumerate(labels):
            tp = counts[(g, g)]
            fp = sum(counts[(o, g)] for o in range(len(labels)) if o != g)
            fn = sum(counts[(g, o)] for o in range(len(names)) if o != g)
            f1s[gold] = 200 * tp / max(2 * tp + fp + fn, 1)
            lines.append(f"| {gold} | " + " | ".join(str(counts[(g, o)]) for o in range(len(names))) + f" | {f1s[gold]:.1f} |")
        lines.append("")
        # which scorer a finding is about: the likeliest label (choice/), after calibration, or the generated one
        scorer = "likeliest label" if metric.startswith("choice/") else "generated label"
        scorer += " after calibration" if "/calibrated/" in metric else ""
        n = len(mine)
        accuracy, margin = _accuracy(mine)
        chance = 1 / len(labels)
        near = accuracy - margin <= chance
        calibrated = metric.replace("macro_f1", "calibrated/macro_f1")
        if near and calibrated in beyond_chance:
            # the scores rank the records; the model's prior over the labels is what fails: say that, not "train more"
            findings.append(
                Finding(
                    "label prior",
                    f"The tuned model's {scorer} accuracy, {100 * accuracy:.1f}% (±{100 * margin:.1f} over n={n}), cannot "
                    f"be told from guessing among {len(labels)} labels, but after one offset per label fitted on "
                    f"held-out records it is {100 * beyond_chance[calibrated]:.1f}%: the model favours one label as a "
                    "whole while its scores still rank the records.",
                    f"read {calibrated} (eval.calibration.split=validation), or balance the training labels",
                )
            )
        elif near:
            findings.append(
                Finding(
                    "near chance",
                    f"The tuned model's {scorer} accuracy, {100 * accuracy:.1f}% (±{100 * margin:.1f} over n={n}), cannot "
                    f"be told from guessing among {len(labels)} labels ({100 * chance:.1f}%): it has not learnt to read "
                    "the evidence.",
                    "experiment=more_steps, or a larger base model (model=hf model.path=...)",
                    ["experiment=more_steps"],
                )
            )
        weak = min(f1s, key=f1s.get)
        if max(f1s.values()) - f1s[weak] >= 25:
            answered = sum(counts[(o, labels.index(weak))] for o in range(len(labels)))
            gold_cases = sum(counts[(labels.index(weak), o)] for o in range(len(names)))
            findings.append(
                Finding(
                    "weak label",
                    f"'{weak}' ({scorer}) has F1 {f1s[weak]:.1f} against {max(f1s.values()):.1f} for the best label; it "
                    f"was answered {answered} times for {gold_cases} gold cases.",
                    f"add or upweight training records labelled '{weak}', train the choice among the labels itself "
                    "(objective=choice), then experiment=more_steps",
                )
            )
        bad = [x["id"] for x in mine if x["row"][1] == len(labels)]
        if bad:
            share = len(bad) / len(mine)
            lines += [f"Unparseable answers: {len(bad)} of {len(mine)}, e.g.:", ""]
            lines += [f"- `{i}`: {_short(outputs.get(i), 120)}" for i in bad[:5]]
            lines.append("")
            if share >= 0.05:
                findings.append(
                    Finding(
                        "answer format",
                        f"{100 * share:.0f}% of the tuned model's answers name no label ({metric}).",
                        "train longer so the label format is learnt (experiment=more_steps), or state the labels "
                        "more plainly in the task's prompt (data.task.prompt)",
                        ["experiment=more_steps"],
                    )
                )
    return lines, findings


# ------------------------------------------------------------------------------------------ generations
def _repetitive(text: str) -> bool:
    words = text.split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(grams) >= 10 and len(set(grams)) / len(grams) < 0.5


def truncated_share(report: dict[str, Any]) -> float:
    """The share of training examples the length audit truncated (0 when the report has no tokenize step)."""
    steps = (report.get("splits") or {}).get("train") or []
    tok = next((s for s in steps if s["step"] == "tokenize"), None)
    return tok["changed"] / tok["in"] if tok and tok["in"] else 0.0


def generation_analysis(generations: list[dict[str, Any]], truncated: float = 0.0) -> tuple[list[str], list[Finding]]:
    """Answer lengths, repetition and answers that never stop; `truncated` (the training examples' truncated
    share) decides whether a model that never stops needs longer examples or more steps."""
    tuned = [g for g in generations if g.get("tuned") is not None]
    if not tuned:
        return [], []
    n = len(tuned)
    empty = [g for g in tuned if not g["tuned"].strip()]
    repeat = [g for g in tuned if _repetitive(g["tuned"])]
    ratios = sorted(len(g["tuned"].split()) / max(len(g["reference"].split()), 1) for g in tuned)
    median = ratios[n // 2]
    lines = [
        f"- generated answers: {n}; empty: {len(empty)}; repetitive (under half of their 3-grams distinct): {len(repeat)}",
        f"- answer length / reference length: median {median:.2f}, 10th-90th percentile "
        f"{ratios[int(0.1 * (n - 1))]:.2f}-{ratios[int(0.9 * (n - 1))]:.2f}",
        "",
    ]
    never = [g for g in tuned if g.get("tuned_stopped") is False]
    base_never = sum(g.get("base_stopped") is False for g in generations)
    stops = f"tuned {len(never)} of {n}, base {base_never} of {len(generations)}"
    lines.insert(1, f"- answers that ran into max_new_tokens without stopping: {stops}")
    lines += [f"- repetitive `{g['id']}`: {_short(g['tuned'], 120)}" for g in repeat[:3]]
    findings = []
    if len(repeat) / n >= 0.1:
        findings.append(
            Finding(
                "repetition",
                f"{len(repeat)} of {n} tuned answers repeat themselves.",
                "eval.generation.repetition_penalty=1.2",
                ["eval.generation.repetition_penalty=1.2"],
            )
        )
    if len(never) / n >= 0.1:
        findings.append(
            Finding(
                "never stops",
                f"{len(never)} of {n} tuned answers ran into max_new_tokens without their end-of-turn token: the model has "
                "not learnt where an answer ends (often because training examples were truncated before their end).",
                f"experiment=longer_context ({100 * truncated:.0f}% of training examples are truncated)"
                if truncated >= 0.05
                else f"experiment=more_steps (only {100 * truncated:.1f}% of training examples are truncated)",
                ["experiment=longer_context" if truncated >= 0.05 else "experiment=more_steps"],
            )
        )
    elif len(never) > base_never and (len(never) - base_never) / n >= 0.05:
        findings.append(
            Finding(
                "stops less often",
                f"The tuned model runs into max_new_tokens without its end-of-turn token more often than its base model "
                f"({stops}): fine-tuning made its answers end less reliably.",
                "experiment=more_steps (the end-of-turn token is in every training answer's labels; more steps teach it)",
                ["experiment=more_steps"],
            )
        )
    if len(empty) / n >= 0.05:
        findings.append(
            Finding(
                "empty answers",
                f"{len(empty)} of {n} tuned answers are empty.",
                "experiment=more_steps",
                ["experiment=more_steps"],
            )
        )
    if median > 2.0 or median < 0.5:
        findings.append(
            Finding(
                "answer length",
                f"Tuned answers are {median:.2f}x the reference length (median): the answer style is not learnt yet.",
                "experiment=more_steps",
                ["experiment=more_steps"],
            )
        )
    return lines, findings


# ------------------------------------------------------------------------------------------ curves
def curve_analysis(curves: dict[str, Any], weights: str | None) -> tuple[list[str], list[Finding]]:
    """Diagnose the logged curves (curves.json); nothing for an evaluation-only folder, which has none."""
    if not curves:
        return [], []
    monitor = next((k for k in curves if k not in ("train/loss", "max_steps")), "val/loss")
    val = [tuple(x) for x in curves.get(monitor, [])]
    train = [tuple(x) for x in curves.get("train/loss", [])]
    if len(val) < 2:
        return (
            [f"- {len(val)} validation check(s): too few to read a learning curve."],
            [
                Finding(
                    "learning curve", "Fewer than two validation checks ran.", "trainer.val_check_interval=<a smaller step count>"
                )
            ],
        )
    best_step, best = min(val, key=lambda x: x[1])
    last_step, last = val[-1]
    lines = [f"- {monitor} at steps " + ", ".join(f"{s}: {v:.4f}" for s, v in val), f"- best: step {best_step} ({best:.4f})"]
    if weights:
        lines.append(f"- weights evaluated: {weights}")
    findings = []
    recent = val[-3:]
    if best_step == last_step and (recent[0][1] - last) / max(abs(recent[0][1]), 1e-9) > 0.01:
        findings.append(
            Finding(
                "still improving",
                f"{monitor} fell {recent[0][1]:.4f} -> {last:.4f} over the last {len(recent)} checks and was lowest at "
                "the last one: training stopped before the validation loss levelled off.",
                "experiment=more_steps",
                ["experiment=more_steps"],
            )
        )
    train_then = [v for s, v in train if s <= best_step]
    train_now = [v for s, v in train if s > best_step]
    if last > best * 1.01 and train_then and train_now and min(train_now) < train_then[-1]:
        findings.append(
            Finding(
                "overfitting",
                f"{monitor} rose from {best:.4f} (step {best_step}) to {last:.4f} (step {last_step}) while the training "
                "loss kept falling: the model fits the training set at the expense of held-out data. The best step's "
                "weights are the ones to keep (eval.weights=best, the default).",
                f"experiment=regularize (or trainer.max_steps={best_step})",
                ["experiment=regularize"],
            )
        )
    return lines, findings


# ------------------------------------------------------------------------------------------ data
def data_analysis(report: dict[str, Any]) -> tuple[list[str], list[Finding]]:
    lines, findings = [], []
    for split, steps in (report.get("splits") or {}).items():
        tok = next((s for s in steps if s["step"] == "tokenize"), None)
        if tok and tok["in"]:
            share = tok["changed"] / tok["in"]
            lines.append(f"- {split}: {tok['changed']} of {tok['in']} examples truncated to data.max_length")
            if split == "train" and share >= 0.05:
                p95 = (report.get("tokens") or {}).get("train", {}).get("p95")
                findings.append(
                    Finding(
                        "truncation",
                        f"{100 * share:.0f}% of training examples lose their end to data.max_length"
                        + (f" (the longest 5% of kept examples reach {p95} tokens)" if p95 else "")
                        + ": the model never sees how those answers end.",
                        "experiment=longer_context (data.max_length=768)",
                        ["experiment=longer_context"],
                    )
                )
    for split, counts in (report.get("labels") or {}).items():
        total = sum(counts.values())
        lines.append(f"- {split} labels: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.items()))
        if split == "train" and len(counts) > 1 and max(counts.values()) >= 3 * min(counts.values()):
            rare = min(counts, key=counts.get)
            findings.append(
                Finding(
                    "label imbalance",
                    f"The training labels are imbalanced ({counts}): '{rare}' is rare, so its F1 suffers first.",
                    f"add training records labelled '{rare}' (DomainTune has no class re-weighting); compare per-label F1 above",
                )
            )
    return lines, findings


# ------------------------------------------------------------------------------------------ bias
# the bias benchmarks' metric families (evaluation/bias.py); a "worse" verdict on one is more bias, beyond doubt
BIAS_PREFIXES = ("mc/crows_pairs/", "mc/bbq/")
BIAS_SCORES = ("pct_stereotype", "amb_bias_score", "disamb_bias_score")


def is_bias_score(metric: str) -> bool:
    """A bias benchmark's score (not its accuracy or likelihood gap): what the findings and the model card judge."""
    return metric.startswith(BIAS_PREFIXES) and metric.endswith(BIAS_SCORES)


def bias_analysis(metrics: dict[str, Any]) -> tuple[list[str], list[Finding]]:
    """The bias benchmarks' scores before and after; a finding for each one the fine-tune made worse beyond doubt."""
    verdicts, base, tuned = metrics.get("verdict") or {}, metrics.get("base") or {}, metrics.get("tuned") or {}
    scored = [k for k in verdicts if is_bias_score(k)]
    lines = [f"- {k}: {base.get(k, math.nan):.2f} -> {tuned.get(k, math.nan):.2f} ({verdicts[k]})" for k in scored]
    worse = [k for k in scored if verdicts[k] == "worse"]
    findings = []
    if worse:
        findings.append(
            Finding(
                "bias",
                f"The fine-tune increased measured bias beyond doubt on {', '.join(worse)} (paired interval excludes "
                "zero): the tuned model leans on stereotypes more than its base model.",
                "inspect the training data for the groups named in these benchmarks' items (mc/*/<type> rows show "
                "which); retrain with fewer steps or a lower learning rate and check again with "
                "eval.general=[crows_pairs,bbq]",
            )
        )
    return lines, findings


# ------------------------------------------------------------------------------------------ memorisation
def memorisation_analysis(rows: list[dict[str, Any]], metrics: dict[str, Any], top: int) -> tuple[list[str], list[Finding]]:
    """The training answers the tuned model reproduces most, and a finding when it reproduces more of them than
    its base model beyond doubt (private data in the training set would leak the same way)."""
    if not rows:
        return [], []
    stage = "tuned" if any(r.get("tuned_longest") is not None for r in rows) else "base"
    worst = sorted(rows, key=lambda r: -(r.get(f"{stage}_longest") or 0))[:top]
    lines = [
        f"Longest verbatim run of the training answer in the {stage} model's greedy continuation of its prompt "
        f"({len(rows)} training records checked; memorisation.jsonl has them all):",
        "",
        "| example | base | tuned | continuation |",
        "|---|---:|---:|---|",
    ]
    for r in worst:
        lines.append(f"| `{r['id']}` | {r.get('base_longest', '-')} | {r.get('tuned_longest', '-')} | {_short(r.get(stage))} |")
    findings = []
    if (metrics.get("verdict") or {}).get("mem/verbatim_rate") == "worse":
        rate = (metrics.get("tuned") or {}).get("mem/verbatim_rate", math.nan)
        findings.append(
            Finding(
                "memorisation",
                f"The tuned model reproduces {rate:.0f}% of the checked training answers verbatim, more than its base "
                "model beyond doubt: anything private in the training answers can come out the same way.",
                "scrub or drop the reproduced records (data.preprocess.pii), train fewer epochs or with "
                "experiment=regularize, and check again",
                ["experiment=regularize"],
            )
        )
    return lines, findings


# ------------------------------------------------------------------------------------------ together
def analyze(run_dir: str | Path, top: int = 5) -> tuple[str, list[Finding]]:
    """The markdown of analysis.md and its findings, from a run (or evaluation) folder."""
    run = Path(run_dir)
    if not (run / "per_example.jsonl").exists():
        raise DomainTuneError(
            f"'{run}' has no per_example.jsonl, so there is nothing to analyse.",
            "Pass a folder written by train.py or scripts/evaluate.py of this version (run_dir=outputs/train/<date>/<run>).",
        )
    per_example = _jsonl(run / "per_example.jsonl")
    generations = _jsonl(run / "generations.jsonl")
    metrics = _json(run / "metrics.json")
    prompts = {g["id"]: g["prompt"] for g in generations}
    outputs = {g["id"]: g.get("tuned") or g["base"] for g in generations}
    findings: list[Finding] = []

    md = [f"# Refinement report: {metrics.get('data', '?')} / {metrics.get('adapter', '?')}", ""]
    md += [f"Split: {metrics.get('split', '?')}; weights: {metrics.get('weights', '?')}.", ""]
    if metrics.get("primary metric"):
        md += [f"**Primary metric** {metrics['primary metric']}", ""]
    wide = [k for k, v in (metrics.get("too_wide") or {}).items() if v]
    if wide:
        findings.append(
            Finding(
                "evidence",
                f"The intervals of {', '.join(wide)} are too wide to tell a moderate change from none.",
                "eval.generation.max_samples=null and eval.max_samples=null (score the whole split)",
            )
        )
    sections = [
        ("Learning curve", curve_analysis(_json(run / "curves.json"), metrics.get("weights"))),
        ("Data", data_analysis(_json(run / "data_report.json"))),
        ("Labels", label_analysis(per_example, outputs)),
        ("Bias benchmarks", bias_analysis(metrics)),
        ("Memorisation", memorisation_analysis(_jsonl(run / "memorisation.jsonl"), metrics, top)),
        ("Generated answers", generation_analysis(generations, truncated_share(_json(run / "data_report.json")))),
    ]
    for _, (_, found) in sections:
        findings += found
    md += ["## Findings", ""]
    md += [f"{k}. **{f.topic}**: {f.text} Try: `{f.change}`." for k, f in enumerate(findings, 1)] or ["None."]
    md.append("")
    for title, (lines, _) in sections:
        if lines:
            md += [f"## {title}", "", *lines, ""]
    changes = largest_changes(per_example, prompts, top)
    if changes:
        md += [f"## Largest changes per example (top {top} each way)", "", *changes]
    return "\n".join(md), findings


def write_analysis(run_dir: str | Path, top: int = 5) -> Path:
    text, findings = analyze(run_dir, top)
    path = Path(run_dir) / "analysis.md"
    path.write_text(text + "\n")
    (Path(run_dir) / "analysis.json").write_text(json.dumps([asdict(f) for f in findings], indent=2))
    return path
