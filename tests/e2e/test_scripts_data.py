"""The data scripts end to end, and the pipeline on every real dataset in ../shared/data (when present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domaintune.utils.hydra import build
from tests.conftest import DOMAINS, ROOT, SHARED_DATA, require, script


def test_prepare_data_prints_the_audit(tmp_path: Path) -> None:
    out = script("scripts/prepare_data.py", "model=tiny", "data=marketing", f"paths.log_dir={tmp_path}")
    assert "Data audit" in out.stdout and "dedup_near" in out.stdout and "padding efficiency" in out.stdout
    [report] = list(tmp_path.glob("prepare_data/*/*/data_report.json"))
    assert json.loads(report.read_text())["summary"]["train"]["out"] > 100


def test_export_data_writes_openai_chat_jsonl(tmp_path: Path) -> None:
    target = tmp_path / "cs.jsonl"
    script(
        "scripts/export_data.py",
        "model=tiny",
        "data=customer_service",
        "format=openai",
        f"output={target}",
        f"paths.log_dir={tmp_path}",
    )
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) > 100
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert all(m["content"] for r in rows for m in r["messages"])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the real datasets live outside the repository (../shared/data)")
@pytest.mark.parametrize("domain", DOMAINS)
def test_real_dataset_pipeline_accounts_for_every_record(domain: str, make_cfg, tokenizer) -> None:
    cfg = make_cfg(f"data={domain}", f"paths.data_dir={SHARED_DATA}", "data.max_samples=null", "data.cache=false")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    dm.audit.check()
    source_lines = {s: sum(1 for _ in (SHARED_DATA / domain / f"{s}.jsonl").open()) for s in ("train", "validation", "test")}
    for split, lines in source_lines.items():
        steps = dm.audit.splits[split]
        assert steps[0].records_in == lines, "every line of the file enters the audit"
        removed = sum(sum(s.removed.values()) for s in steps)
        assert lines - removed == len(dm.examples[split]) > 0, "and every record that leaves it is counted"


@pytest.mark.slow  # minutes of CPU: .ci/run runs it in the slow lane after `make test`
def test_benchmark_compares_systems_on_identical_work(tmp_path: Path) -> None:
    """The benchmark runs DomainTune's training path and the transformers Trainer on DomainTune's batch plan (the
    same examples in the same batches, checked step by step), scores PIQA with lm-eval too (equal scores), and
    generates the same answers on every path (tiny model)."""
    require("lm_eval", "the dev extra: pip install -e '.[dev]'")
    script(
        "scripts/benchmark.py",
        "model=tiny",
        "data.max_samples=40",
        "bench.steps=2",
        "bench.warmup=2",
        "bench.profile=5",
        "bench.rounds=1",
        "bench.only=[domaintune,domaintune_unoptimised,hf_trainer]",
        "bench.commits=[HEAD]",
        "bench.mc_max_items=6",
        "bench.lm_eval_batch_sizes=[4]",
        "bench.gen_prompts=4",
        "eval.generation.max_new_tokens=4",
        f"paths.log_dir={tmp_path}",
    )
    [result] = list(tmp_path.glob("benchmark/*/*/benchmark.json"))
    data = json.loads(result.read_text())
    assert data["matmul_gflops"]["fp32"] > 0
    # provenance: the CPU's relevant flags, the versions of every compared library, the commit and the command
    provenance = data["machine"]
    assert isinstance(provenance["cpu_flags"], list) and provenance["cores"] >= 1 and provenance["commit"]
    assert {"torch", "transformers", "peft", "trl", "lm_eval"} <= provenance["versions"].keys()
    assert provenance["versions"]["torch"] and data["command"].startswith("python scripts/benchmark.py")
    train = {name: runs[0] for name, runs in data["train"].items()}
    [head] = [name for name in train if name.startswith("domaintune@")]
    assert set(train) == {"domaintune", "domaintune_unoptimised", "hf_trainer", head}
    # bench.commits: the commit's DomainTune ran from its own temporary worktree, removed afterwards
    assert Path(train[head]["code"]).parts[-2:] == ("src", "domaintune") and not Path(train[head]["code"]).exists()
    assert train["domaintune"]["code"] == str(ROOT / "src" / "domaintune")
    for name, r in train.items():
        assert "error" not in r, (name, r)
        assert r["steps"] == 2 and r["answer_tok_s"] > 0 and r["peak_rss_gib"] > 0 and r["other_cpu_s"] >= 0
        assert r["answer_tok_s"] <= r["real_tok_s"] <= r["processed_tok_s"]
        # needed FLOP/s; the profile of an extra step after the measured ones (not counted: 2 steps, 2 digests);
        # a commit runs unprofiled (its own script profiled inside its warm-up, slowing its measured steps)
        assert r["model_gflops"] > 0 and len(r["profile"]) == (0 if name == head else 5), name
    assert train["domaintune"]["batching"] == "grouped by length"
    # identical work: every system replayed the plan (4 batches: 2 warm-up + 2 measured), digests equal step by step
    assert len(data["batch_plan"]) == 4 and all(r["batches"] == "plan" for r in train.values())
    assert data["identical_batches"] == dict.fromkeys(train, True)
    assert len({tuple(r["digests"]) for r in train.values()}) == 1 and len(train["hf_trainer"]["digests"]) == 2
    assert train["domaintune"]["padding_efficiency"] == train["domaintune_unoptimised"]["padding_efficiency"]
    assert data["mc"]["identical"] and data["mc"]["items"] == 6
    assert data["generation"]["same_answers"]
    table = (result.parent / "benchmark.md").read_text()
    assert "answer tok/s ÷ hf_trainer" in table and "| lm-evaluation-harness | 4 |" in table
    assert f"answer tok/s ÷ {head}" in table and f"| domaintune ÷ {head} |" in table, "commit column, ratio per round"
    assert "DomainTune's batch plan, replayed by every system" in table
    assert data["matmul_peak"]["gflops"] > 0 and "share of matmul peak" in table and "| operator | domaintune |" in table


def test_convert_tatqa_writes_records_that_data_finance_reads(tmp_path: Path, make_cfg, tokenizer) -> None:
    """TAT-QA's nested release format -> one record per span/count question (arithmetic ones left out), with the
    context written as ../shared/data/finance does, which data=finance then prepares."""
    report = {
        "table": {"uid": "t1", "table": [["", "2019", "2018"], ["Revenue", "$1,200", "$1,050"], ["Segments", "3", "2"]]},
        "paragraphs": [
            {"uid": "p1", "order": 1, "text": "Revenue grew in Europe and Asia."},
            {"uid": "p2", "order": 2, "text": "The company is audited by Smith LLP."},
        ],
        "questions": [
            {"uid": "q1", "question": "Who audits the company?", "answer": ["Smith LLP"], "answer_type": "span",
             "answer_from": "text", "rel_paragraphs": ["2"], "scale": ""},
            {"uid": "q2", "question": "Where did revenue grow?", "answer": ["Europe", "Asia"], "answer_type": "multi-span",
             "answer_from": "text", "rel_paragraphs": ["1"], "scale": ""},
            {"uid": "q3", "question": "How many segments in 2019?", "answer": 3, "answer_type": "count",
             "answer_from": "table", "rel_paragraphs": [], "scale": ""},
            {"uid": "q4", "question": "What was the change in revenue?", "answer": 150, "answer_type": "arithmetic",
             "answer_from": "table", "rel_paragraphs": [], "scale": "thousand"},
        ],
    }  # fmt: skip
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps([report] * 1))
    out = tmp_path / "finance"
    printed = script(
        "scripts/convert_tatqa.py", "--train", str(raw), "--validation", str(raw), "--test", str(raw), "--out", str(out)
    )
    assert "train: 3 questions kept, 1 arithmetic ones left out" in printed.stdout
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["answer_spans"] for r in rows] == [["Smith LLP"], ["Europe", "Asia"], ["3"]]
    assert rows[0]["context"] == (
        "Table:\n | 2019 | 2018\nRevenue | $1,200 | $1,050\nSegments | 3 | 2\n\nThe company is audited by Smith LLP."
    )
    assert rows[2]["context"].endswith("Segments | 3 | 2"), "no paragraph: the table alone"
    cfg = make_cfg("data=finance", f"data.dir={out}", "data.preprocess.dedup.exact=false", "data.preprocess.leakage=false")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    assert len(dm.records["test"]) == 3 and dm.tasks[""].reference(dm.records["test"][1]) == "Europe; Asia"
