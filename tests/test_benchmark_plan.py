"""The benchmark's identical-work check: a batch's digest ignores padding (side and width) but not its tokens,
labels or examples, and a system whose batches differ from the first system's is flagged in the table."""

from __future__ import annotations

import itertools

import pytest
import torch

from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hydra import build
from scripts.benchmark import identical_batches, profile_table, train_table
from scripts.devtools.bench import IGNORE, batch_digest


def collated(rows: list[tuple[list[int], list[int]]], width: int, left: bool) -> dict[str, torch.Tensor]:
    ids, labels, mask = [], [], []
    for tokens, labs in rows:
        pad = width - len(tokens)
        ids.append([0] * pad + tokens if left else tokens + [0] * pad)
        labels.append([IGNORE] * pad + labs if left else labs + [IGNORE] * pad)
        mask.append([0] * pad + [1] * len(tokens) if left else [1] * len(tokens) + [0] * pad)
    return {k: torch.tensor(v) for k, v in (("input_ids", ids), ("labels", labels), ("attention_mask", mask))}


def test_a_batch_digest_ignores_padding_but_not_content() -> None:
    rows = [([5, 6, 7], [IGNORE, 6, 7]), ([8, 9], [IGNORE, 9])]
    ours = batch_digest(collated(rows, 3, left=False))
    assert batch_digest(collated(rows, 5, left=True)) == ours, "left padding to another width: same work"
    assert batch_digest(collated(rows[::-1], 4, left=False)) == ours, "row order within the step does not matter"
    assert batch_digest(collated([([5, 6, 7], [IGNORE, IGNORE, 7]), rows[1]], 3, left=False)) != ours, "labels count"
    assert batch_digest(collated([([5, 6, 4], [IGNORE, 6, 4]), rows[1]], 3, left=False)) != ours, "tokens count"
    assert batch_digest(collated(rows[:1], 3, left=False)) != ours, "examples count"


# one system's result in one round, as a benchmark worker writes it (the fields the tables read)
RUN = {"answer_tok_s": 10.0, "real_tok_s": 20.0, "processed_tok_s": 30.0, "padding_efficiency": 0.6, "step_s": 1.0,
       "peak_rss_gib": 1.0, "other_cpu_share": 0.0, "batches": "plan", "digests": ["a", "b"],
       "model_gflops": 20.0, "minor_faults_per_step": 1500.0}  # fmt: skip


def test_a_system_on_other_batches_is_flagged() -> None:
    run = RUN
    results = {
        "domaintune": [run, run],
        "hf_trainer": [run, {**run, "answer_tok_s": 5.0}],
        "trl": [{**run, "digests": ["a", "c"], "batches": "own"}],
    }
    assert identical_batches(results) == {"domaintune": True, "hf_trainer": True, "trl": False}
    table = "\n".join(train_table(results, "domaintune", {"trl": "defaults (checkpointing on)"}, peak_gflops=80.0))
    assert "| hf_trainer |  | plan | yes | 2 | 7.5 (5.0-10.0) |" in table, "the median of the rounds and their spread"
    assert "| trl | defaults (checkpointing on) | own | no | 1 |" in table
    assert "| domaintune |  | plan | yes | 2 | 10.0 (10.0-10.0) |" in table and "| 1.33 | 1.00 |" in table
    assert "| 1.00 | 20.0 | 25% | 0% | 1,500 |" in table, "needed GFLOP/s, their share of the matmul peak, page faults"
    assert "| 1.00 | 20.0 |  | 0% |" in "\n".join(train_table(results, "domaintune", {})), "no peak measured: no share"
    older = {"domaintune": [run], "domaintune@abc1234": [{k: v for k, v in run.items() if k != "minor_faults_per_step"}]}
    assert "| 0% |  |" in "\n".join(train_table(older, "domaintune", {})), "a commit that did not count faults: empty"


def test_the_profile_table_sets_each_systems_costliest_operators_side_by_side() -> None:
    mm, add, copy = "aten::mm", "aten::add", "aten::copy_"
    results = {
        "domaintune": [{"profile": [{"op": mm, "self_ms": 10.0, "calls": 5}, {"op": add, "self_ms": 1.0, "calls": 2}]}],
        # a failed round has no profile: the next round's is used
        "hf_trainer": [{"error": "exit 1"},
                       {"profile": [{"op": mm, "self_ms": 12.0, "calls": 5}, {"op": copy, "self_ms": 3.0, "calls": 9}]}],
        "trl": [{"profile": []}],  # profiling off: no column
    }  # fmt: skip
    table = profile_table(results)
    assert "| operator | domaintune | hf_trainer |" in table
    rows = [line for line in table if line.startswith("| `")]
    assert rows == ["| `aten::mm` | 10.0 (5) | 12.0 (5) |", "| `aten::copy_` | - | 3.0 (9) |", "| `aten::add` | 1.0 (2) | - |"]
    assert "| listed ops, total | 11.0 | 15.0 |" in table
    assert profile_table({"domaintune": [{"profile": []}]}) == [], "no profile measured: no table"


def test_provenance_records_an_instruction_set_cap_and_the_cap_takes_effect(monkeypatch) -> None:
    """The AVX2-only figures are measured on an AVX-512 machine with the kernels capped by environment
    variables: `machine()` must say so (the CPU flags alone would claim AVX-512), and under the cap torch
    must dispatch to AVX2 and see no native bf16, so `precision: auto` picks fp32 as on a real AVX2 CPU."""
    import json
    import os
    import subprocess
    import sys

    from scripts.benchmark import ISA_CAPS, machine

    caps = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    for key in ISA_CAPS:
        monkeypatch.delenv(key, raising=False)
    for key, value in caps.items():
        monkeypatch.setenv(key, value)
    info = machine()
    assert info["isa_caps"] == caps
    assert info["kernel_isa"] == torch.backends.cpu.get_cpu_capability()
    probe = (
        "import json, torch; from domaintune.utils.hardware import cpu_has_fast_bf16, resolve_precision; "
        "print(json.dumps([torch.backends.cpu.get_cpu_capability(), cpu_has_fast_bf16(), resolve_precision('auto', 'cpu')]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["AVX2", False, "32-true"]


def test_commits_are_divided_round_by_round_and_variants_are_not() -> None:
    """bench.commits: DomainTune at another commit (`domaintune@<sha>`) gets a ratio column like a peer, and the
    within-round ratios are reported for it and every peer; DomainTune's own variants are not divided by."""
    from scripts.benchmark import compared, round_ratios

    run = RUN
    results = {
        "domaintune": [run, {**run, "answer_tok_s": 12.0}, run],
        "domaintune_lean": [run, run, run],
        "domaintune@abc1234": [{**run, "answer_tok_s": 8.0}, {**run, "answer_tok_s": 10.0}, {"error": "exit 1", "tail": ""}],
        "hf_trainer": [{**run, "answer_tok_s": 5.0}] * 3,
    }
    assert compared(results, "domaintune") == ["domaintune@abc1234", "hf_trainer"]
    table = "\n".join(train_table(results, "domaintune", {}))
    assert "answer tok/s ÷ domaintune@abc1234" in table and "answer tok/s ÷ domaintune_lean" not in table
    lines = round_ratios(results, "domaintune")
    # a failed round is left out, not paired with another round
    assert "| domaintune ÷ domaintune@abc1234 | 1.25 / 1.20 |" in lines
    assert "| domaintune ÷ hf_trainer | 2.00 / 2.40 / 2.00 |" in lines
    assert round_ratios({"domaintune": [run]}, "domaintune") == [], "nothing to divide by: no table"


def test_a_commit_is_checked_out_for_the_benchmark_and_removed_after() -> None:
    import subprocess

    from scripts.benchmark import ROOT, checkouts

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    with checkouts(["HEAD"]) as made:
        [(name, path)] = made.items()
        assert name == f"domaintune@{head}"
        assert (path / "scripts" / "benchmark.py").exists() and (path / "src" / "domaintune" / "conf").is_dir()
    assert not path.exists()
    listed = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, cwd=ROOT).stdout
    assert str(path) not in listed
    with pytest.raises(DomainTuneError, match="not a commit"), checkouts(["no-such-revision"]):
        pass


def test_the_longest_plan_takes_the_epochs_heaviest_batches_in_epoch_order(make_cfg, tokenizer) -> None:
    from scripts.devtools.bench import batch_plan

    cfg = make_cfg("data.batch_size=4")
    dm = build(cfg.data, tokenizer=tokenizer)
    dm.prepare()
    rows = dm.train_rows()
    sampler = dm.train_dataloader().batch_sampler
    epoch = [list(b) for b in itertools.islice(iter(sampler), len(sampler))]

    def positions(b: list[int]) -> int:
        return len(b) * max(len(rows[i]["input_ids"]) for i in b)

    longest = batch_plan(cfg, 3, "longest")
    assert batch_plan(cfg, 3, "first") == epoch[:3]
    assert len(longest) == 3 and all(b in epoch for b in longest)
    assert sorted(epoch.index(b) for b in longest) == [epoch.index(b) for b in longest], "epoch order"
    assert min(map(positions, longest)) >= max(positions(b) for b in epoch if b not in longest)
    with pytest.raises(DomainTuneError, match="plan_pick"):
        batch_plan(cfg, 3, "shortest")


def test_the_peers_run_transformers_and_peft_as_published(make_cfg) -> None:
    """The peers' model carries none of DomainTune's own speed-ups (transformers' RMSNorm, PEFT's LoRA layer and
    its nn.Dropout), while DomainTune's own loader and adapter give the same config all three."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loading import load_model
    from scripts.devtools.bench import _peer_setup

    cfg = make_cfg("adapter=lora")
    peer, *_ = _peer_setup(cfg)
    ours = apply_adapter(load_model(cfg.model)[0], cfg.adapter, peft_config(cfg.adapter))

    def kinds(model: torch.nn.Module) -> set[str]:
        norms = {type(m).__name__ for m in model.modules() if isinstance(m, LlamaRMSNorm)}
        loras = {type(m).__name__ for m in model.modules() if isinstance(m, LoraLinear)}
        drops = {type(d).__name__ for m in model.modules() if isinstance(m, LoraLinear) for d in m.lora_dropout.values()}
        return norms | loras | drops

    assert kinds(peer) == {"LlamaRMSNorm", "Linear", "Dropout"}
    assert kinds(ours) == {"FusedLlamaRMSNorm", "FoldedLoraLinear", "FastDropout"}


def test_the_profiled_step_comes_after_the_measured_ones() -> None:
    """bench.profile profiles one extra step after the warm-up and measured steps, on the plan's last batch again
    (a profile in the warm-up slowed the steps after it); without a profile the plan and step count stay as they are."""
    from scripts.devtools.bench import StepProfile

    plan = [[0, 1], [2, 3], [4, 5]]
    profiled, unprofiled = StepProfile(3, 5), StepProfile(3, 0)
    assert profiled.step == 4 and profiled.extra_steps == 1 and profiled.plan(plan) == [*plan, [4, 5]]
    assert unprofiled.extra_steps == 0 and unprofiled.plan(plan) == plan and profiled.plan(None) is None
    assert profiled.total_steps == 4 and unprofiled.total_steps == 3
    for step in (1, 2, 3):
        profiled.begin(step)
        assert profiled._profiler is None, "no measured step is profiled"
    profiled.begin(4)
    torch.ones(3).add(1)
    profiled.end()
    assert profiled.table and all(row["calls"] >= 1 for row in profiled.table)
