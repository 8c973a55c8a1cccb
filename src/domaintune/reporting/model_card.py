"""The model card every run leaves beside its adapter (`adapter/README.md`, the Hugging Face convention).

It is written from what the run measured, never from hopes: the base model, the data and its audit, the
configuration that produced the weights, the base-vs-tuned table with intervals and verdicts, and the limits
that follow from the numbers (metrics that got worse or show no detectable change are named).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from domaintune.reporting.analysis import is_bias_score
from domaintune.reporting.report import fmt


def _front_matter(card: dict[str, Any]) -> str:
    meta = {
        "base_model": card["base_model"],
        "library_name": "peft" if card["adapter_kind"] == "peft" else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["domaintune", card["data"], card["adapter"]],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _audit_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for split, s in report.get("summary", {}).items():
        removed: dict[str, int] = {}
        for step in report["splits"].get(split, []):
            for why, n in step["removed"].items():
                removed[why] = removed.get(why, 0) + n
        why = ", ".join(f"{k} {v}" for k, v in removed.items()) or "none"
        tokens = report.get("tokens", {}).get(split)
        size = f"; {tokens['examples']} examples, median {tokens['median']} tokens" if tokens else ""
        lines.append(f"- {split}: {s['in']} records read, {s['out']} kept (removed: {why}){size}")
    return lines


def _results_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| metric | n | base | tuned | change | 95% interval | verdict |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        interval = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if r["ci_low"] is not None else "-"
        lines.append(
            f"| {name} | {r['n'] or '-'} | {fmt(r['base'])} | {fmt(r['tuned'])} | {fmt(r['change'])} | {interval} | "
            f"{r['verdict'] or '-'} |"
        )
    return lines


def _bias_limit(rows: dict[str, dict[str, Any]]) -> str:
    """What the bias benchmarks (CrowS-Pairs, BBQ) say about this fine-tune, or that none was run."""
    scored = [k for k in rows if is_bias_score(k)]
    if not scored:
        return "- Bias: not measured in this run (`eval.general=[crows_pairs,bbq]` scores CrowS-Pairs and BBQ before and after)."
    more = [k for k in scored if rows[k]["verdict"] == "worse"]
    if more:
        return f"- **Bias: the fine-tune increased measured bias beyond doubt on {', '.join(more)}.**"
    return f"- Bias: no score of {len(scored)} ({', '.join(sorted({k.split('/')[1] for k in scored}))}) got worse beyond doubt."


def write_model_card(adapter_dir: Path, card: dict[str, Any], rows: dict[str, dict[str, Any]], report: dict[str, Any]) -> Path:
    """Write `adapter_dir/README.md`. `card` holds the run's facts (see train.model_card_facts)."""
    worse = [k for k, r in rows.items() if r["verdict"] == "worse"]
    unclear = [k for k, r in rows.items() if r["verdict"] == "no detectable change"]
    better = [k for k, r in rows.items() if r["verdict"] == "better"]
    limits = [
        f"- Measured on {card['split']} of the data below, with the {card['weights']} weights; other data or "
        "prompts may behave differently.",
        f"- Better than the base model with 95% confidence on: {', '.join(better) or 'no metric'}.",
    ]
    if unclear:
        limits.append(f"- No detectable change on: {', '.join(unclear)} (the gain, if any, is within noise).")
    if worse:
        limits.append(f"- **Worse than the base model on: {', '.join(worse)}.**")
    limits.append(_bias_limit(rows))
    limits.append(
        "- A small language model generates fluent text that can be wrong; do not use its answers for decisions "
        "without a qualified person checking them."
    )
    if card.get("trust_remote_code"):
        limits.append("- The base model ran its own code from the Hub (trust_remote_code=true).")
    text = [
        _front_matter(card),
        f"# {card['base_model_name']} adapted to {card['data']} ({card['adapter']})",
        "",
        "Written by DomainTune at the end of the training run; every number below was measured by that run.",
        "",
        "## Model",
        f"- Base model: `{card['base_model']}`"
        + (f" ({card['base_model_name']})" if card["base_model_name"] != card["base_model"] else ""),
        f"- Weights trained on: {card['weights_trained_on']}",
        f"- Adaptation: `{card['adapter']}` — {card['trainable']}",
        f"- Weights: {card['weights']}",
        "",
        "## Intended use",
        f"A {card['data']} assistant, prompted as in training with the system prompt:",
        "",
        f"> {card['system_prompt'] or '(none)'}",
        "",
        "Load it with `python scripts/chat.py run_dir=<run>`, serve it with `python scripts/serve.py run_dir=<run>`, "
        "or with PEFT: `PeftModel.from_pretrained(base_model, '<run>/adapter')`.",
        "",
        "## Data",
        f"- Data config: `{card['data']}`; sources: {card['sources']}",
        f"- Fingerprint (sources, preprocessing, tokenizer, seed): `{card['fingerprint']}`",
        *_audit_lines(report),
        "",
        "## Training",
        *[f"- {k}: `{v}`" for k, v in card["training"].items()],
        "",
        f"## Evaluation on {card['split']}: base vs tuned ({card['interval']})",
        *_results_lines(rows),
        "",
        "## Limits",
        *limits,
        "",
    ]
    path = adapter_dir / "README.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path
