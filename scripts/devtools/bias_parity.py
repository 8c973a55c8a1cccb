"""CrowS-Pairs and BBQ scored by DomainTune and by lm-evaluation-harness itself on the same items and model.

lm-eval's own task code scores the items: its `crows_pairs` and `bbq` utils (imported from the installed
package, not copied) run on our JSONL files, converted back to the field names of lm-eval's hub datasets. Used by
tests/evaluation/test_bias.py on the shipped samples (tiny model) and, for RESULTS.md, on every real item:

    python scripts/devtools/bias_parity.py paths.data_dir=../shared/data [model=...] \
        [eval.benchmarks.bbq.max_samples=N eval.benchmarks.crows_pairs.max_samples=N]

lm-eval is imported here only (the dev extra); the runtime never needs it.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from domaintune.evaluation import bias
from domaintune.models.loading import load_model, materialize

TASKS = {"crows_pairs": "dt_crows", "bbq": "dt_bbq"}
# a multiple-choice task over one local JSONL file (lm-eval's `json` loader), then each task's own keys
LOCAL_TASK = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
"""
CROWS_YAML = """doc_to_text: ""
doc_to_target: 0
doc_to_choice: !function utils.crows_choice
target_delimiter: ""
process_results: !function utils.process_results
metric_list:
  - metric: likelihood_diff
    aggregation: mean
    higher_is_better: false
  - metric: pct_stereotype
    aggregation: mean
    higher_is_better: false
"""
BBQ_YAML = """process_docs: !function utils.process_docs
process_results: !function utils.process_results_multiple_choice
doc_to_text: "{{{{context}}}}\\n\\nQ: {{{{question}}}}\\nA:"
doc_to_target: !function utils.doc_to_target
doc_to_choice: !function utils.doc_to_choice
metric_list:
{metrics}
"""
AGGREGATION = {
    "acc": "mean",
    "accuracy_amb": "!function utils.agg_accuracy_amb",
    "accuracy_disamb": "!function utils.agg_accuracy_disamb",
    "amb_bias_score": "!function utils.agg_amb_bias_scores",
    "disamb_bias_score": "!function utils.agg_disamb_bias_scores",
}


def _as_lm_eval_bbq(rec: dict[str, Any]) -> dict[str, Any]:
    """Our BBQ record with the field names of lm-eval's hub copy (ans0..2, label, additional_metadata)."""
    return {
        **{f"ans{k}": c for k, c in enumerate(rec["choices"])},
        "label": rec["answer_index"],
        **{k: rec[k] for k in ("context", "question", "category", "context_condition", "question_polarity", "answer_info")},
        "additional_metadata": {"stereotyped_groups": rec["stereotyped_groups"]},
    }


def _write_tasks(workdir: Path, crows: list[dict], bbq: list[dict]) -> None:
    (workdir / "crows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in crows))
    (workdir / "bbq.jsonl").write_text("".join(json.dumps(_as_lm_eval_bbq(r)) + "\n" for r in bbq))
    # lm-eval resolves `!function utils.x` next to the task file: a utils module that re-exports its own code
    (workdir / "utils.py").write_text(
        "from lm_eval.tasks.bbq.utils import *  # noqa: F403\n"
        "from lm_eval.tasks.crows_pairs.utils import doc_to_choice as crows_choice, process_results\n"
    )
    (workdir / "dt_crows.yaml").write_text(LOCAL_TASK.format(task="dt_crows", data=workdir / "crows.jsonl") + CROWS_YAML)
    # every metric lm-eval's bbq task lists (its process_results emits all eleven categories' scores)
    import lm_eval.tasks

    listed = re.findall(
        r"- metric: (\w+)", (Path(lm_eval.tasks.__file__).parent / "bbq" / "bbq_multiple_choice.yaml").read_text()
    )
    per_category = [m for m in listed if m not in AGGREGATION]
    metrics = "".join(
        f"  - metric: {m}\n    aggregation: {AGGREGATION.get(m) or AGGREGATION[m.split('_score_')[0] + '_score']}\n"
        f"    higher_is_better: {'true' if m.startswith('acc') else 'false'}\n"
        for m in [*AGGREGATION, *per_category]
    )
    (workdir / "dt_bbq.yaml").write_text(
        LOCAL_TASK.format(task="dt_bbq", data=workdir / "bbq.jsonl") + BBQ_YAML.format(metrics=metrics)
    )


def lm_eval_scores(model_path: str, crows: list[dict], bbq: list[dict], batch_size: int = 16) -> dict[str, Any]:
    """lm-eval's metrics (our names and scale: %, bias scores x100) and per-item log-likelihoods (fp32, CPU)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        _write_tasks(Path(tmp), crows, bbq)
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_path},dtype=float32",
            tasks=list(TASKS.values()),
            task_manager=TaskManager(include_path=tmp),
            batch_size=batch_size,
            device="cpu",
            log_samples=True,
        )
    metrics: dict[str, dict[str, float]] = {}
    for ours, task in TASKS.items():
        metrics[ours] = {}
        for key, value in out["results"][task].items():
            metric = key.split(",")[0]
            if "stderr" in key or not isinstance(value, float) or math.isnan(value):
                continue
            if "_bias_score_" in metric:  # lm-eval's amb_bias_score_Age is our Age/amb_bias_score
                kind, category = metric.split("_score_")
                metric = f"{category}/{kind}_score"
            metrics[ours][metric] = value if metric == "likelihood_diff" else 100 * value
    lls = {
        ours: [[ll for ll, _ in s["filtered_resps"]] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]
        for ours, task in TASKS.items()
    }
    return {"metrics": metrics, "lls": lls}


def our_scores(model_cfg: Any, specs: dict[str, dict[str, Any]], records: dict[str, list[dict]]) -> dict[str, Any]:
    """Our metrics and per-item log-likelihoods of both benchmarks (fp32, the evaluator's fast paths on)."""
    model, tok = load_model(model_cfg)
    model.float().eval()
    metrics, lls = {}, {}
    for name, recs in records.items():
        spec = specs[name]
        how = bias.Scoring(spec["prompt"], spec["delimiter"], int(spec["batch_size"]), True, True)
        _, scorer = bias.KINDS[spec["kind"]]
        metrics[name] = {k: e.value() for k, e in scorer(model, tok, recs, how, name).items()}
        lls[name] = bias.loglikelihoods(model, tok, recs, [bias.choices_of(spec["kind"], r) for r in recs], how, name)
    return {"metrics": metrics, "lls": lls}


def compare(model_cfg: Any, specs: dict[str, dict[str, Any]], records: dict[str, list[dict]]) -> dict[str, Any]:
    """Both sides' metrics and log-likelihoods on the same items and model."""
    theirs = lm_eval_scores(str(materialize(model_cfg)), records["crows_pairs"], records["bbq"])
    return {"ours": our_scores(model_cfg, specs, records), "lm_eval": theirs}


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from domaintune.utils.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=argv)
    specs = {k: dict(v) for k, v in cfg.eval.benchmarks.items()}
    # eval.benchmarks.<name>.max_samples=N compares the first N items (lm-eval scores each BBQ choice in its own row:
    # all 1,500 items take hours on 2 cores)
    records = {
        name: bias.load_records(specs[name]["dir"], specs[name]["split"], specs[name]["max_samples"], bias.KINDS[name][0])
        for name in TASKS
    }
    both = compare(cfg.model, specs, records)
    print(f"{len(records['crows_pairs'])} CrowS-Pairs pairs, {len(records['bbq'])} BBQ items, model {cfg.model.name}")
    for name in TASKS:
        ours, theirs = both["ours"]["lls"][name], both["lm_eval"]["lls"][name]
        worst = max(abs(a - b) for x, y in zip(ours, theirs, strict=True) for a, b in zip(x, y, strict=True))
        print(f"{name}: largest log-likelihood difference over {sum(map(len, ours))} continuations: {worst:.2e}")
    print("| metric | DomainTune | lm-eval | difference |\n|---|---:|---:|---:|")
    for name in TASKS:
        for metric, theirs in both["lm_eval"]["metrics"][name].items():
            mine = both["ours"]["metrics"][name][metric]
            print(f"| {name}/{metric} | {mine:.4f} | {theirs:.4f} | {mine - theirs:+.1e} |")


if __name__ == "__main__":
    main(sys.argv[1:])
