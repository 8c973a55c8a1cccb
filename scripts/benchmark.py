"""DomainTune against its peers on identical work, on this machine, in one invocation.

    python scripts/benchmark.py paths.data_dir=../shared/data              # everything (about 45 min on 2 cores)
    python scripts/benchmark.py paths.data_dir=../shared/data bench.parts=[train] bench.rounds=2
    python scripts/benchmark.py bench.parts=[hardware]                      # matmul GFLOP/s per dtype only
    # an AVX-512/AMX machine run as an AVX2-only one (fp32 everywhere: native bf16 then reads False)
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python scripts/benchmark.py ...
    # a change against the code before it, on the epoch's heaviest batches, with the Trainer beside them
    python scripts/benchmark.py paths.data_dir=../shared/data bench.parts=[train] bench.only=[domaintune,hf_trainer] \
        bench.commits=[HEAD~1] bench.plan_pick=longest

Parts (bench.parts):
- hardware: matmul GFLOP/s per dtype (what `precision: auto` decides from);
- train: DomainTune's own training path (train.prepare_training + Lightning fit) in each configured variant,
  TRL's SFTTrainer and a plain transformers Trainer + PEFT: same model, token ids, answer-only labels, LoRA,
  precision, batch, max length, schedule and seed; answer / real / processed tokens/s, padding efficiency,
  s/step, peak RSS, and DomainTune / peer ratios;
- mc: PIQA through our scorer and through lm-evaluation-harness (time, and whether scores are equal);
- generation: generated tokens/s base vs tuned, and our batched generation vs a plain `generate` loop.
Each measurement runs in its own subprocess, one at a time, systems alternating across rounds; the CPU
time other processes used meanwhile is recorded beside it. Writes benchmark.json and benchmark.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from domaintune.utils.config import CONFIG_DIR
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hardware import cpu_has_fast_bf16
from domaintune.utils.hydra import run_task

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = Path(__file__).resolve()


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (user + nice + system + irq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# the CPU features a speed figure depends on (bf16 and AMX matmuls, vector width), listed in every result
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
# environment variables that cap the instruction set torch's kernels use (ATen, oneDNN, MKL): set, they let an
# AVX-512/AMX machine run as an AVX2-only one (native bf16 then reads False and precision=auto picks fp32)
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# the libraries of every system compared, recorded with their versions (peers pinned in constraints.txt)
LIBRARIES = ("torch", "transformers", "peft", "pytorch_lightning", "trl", "lm_eval", "accelerate")


def machine() -> dict[str, Any]:
    """Provenance of a measurement: CPU model and the flags that matter, cores, GPU, library versions, commit."""
    from importlib.metadata import PackageNotFoundError, version

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = version(lib.replace("_", "-"))
        except PackageNotFoundError:
            versions[lib] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout.strip())
    return {
        "cpu": cpu or platform.processor(),
        "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags),
        "cores": os.cpu_count(),
        "native_bf16": cpu_has_fast_bf16(),
        # what torch's kernels dispatch to, and any cap set on it (the flags above are the CPU's, not the cap's)
        "kernel_isa": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions,
        "commit": commit + ("+uncommitted changes" if dirty else "") if commit else None,
    }


def run_job(name: str, overrides: list[str], folder: Path, checkout: Path = ROOT) -> dict[str, Any]:
    """One measurement in a fresh process; returns its result plus the other processes' CPU use meanwhile.
    `checkout`: the copy of the repository whose code measures (another commit's worktree: its benchmark
    script, its configs and its package, ahead of the installed one on the import path)."""
    result = folder / f"{name}-{time.time_ns()}.json"
    script = checkout / SCRIPT.relative_to(ROOT)
    cmd = [sys.executable, str(script), f"+bench_worker={name}", f"+bench_result={result}", *overrides]
    env = dict(os.environ)
    if checkout != ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout / "src"), *filter(None, [env.get("PYTHONPATH")])])
    load_before = os.getloadavg()[0]
    busy, mine = busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - mine.ru_utime) + (after.ru_stime - mine.ru_stime)
    if proc.returncode != 0 or not result.exists():
        (folder / f"{name}.log").write_text(proc.stdout + proc.stderr)
        tail = (proc.stdout + proc.stderr)[-1500:]
        return {"error": f"exit {proc.returncode}; log in {folder / (name + '.log')}", "tail": tail}
    data = json.loads(result.read_text())
    data["other_cpu_s"] = max(0.0, busy_cpu_seconds() - busy - child_cpu)
    data["other_cpu_share"] = data["other_cpu_s"] / (wall * (os.cpu_count() or 1))
    data["loadavg_before"] = load_before
    return data


def passthrough() -> list[str]:
    """The command line's overrides (data, model, adapter...) go to every worker, so all see the same config."""
    return [
        o
        for o in HydraConfig.get().overrides.task
        if not o.startswith(("bench.parts", "bench.rounds", "bench.only", "bench.plan", "bench.commits"))
    ]


@contextlib.contextmanager
def checkouts(revisions: list[str]) -> Iterator[dict[str, Path]]:
    """Each git revision checked out in a temporary worktree of this repository, for as long as the benchmark
    runs: {system name `domaintune@<short commit>`: the worktree}. Why: a change's speed is best read against the
    code before it on the same machine in the same invocation (sessions' machines of one kind differ by more
    than many changes: RESULTS.md, stop 35)."""
    made: dict[str, Path] = {}
    try:
        for rev in revisions:
            sha = subprocess.run(
                ["git", "rev-parse", "--short", f"{rev}^{{commit}}"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip()
            if not sha:
                raise DomainTuneError(
                    f"bench.commits names {rev!r}, which is not a commit of this repository ({ROOT}).",
                    "Name commits as git does (a hash, a tag, HEAD~2); `git log --oneline` lists them.",
                )
            if f"domaintune@{sha}" in made:
                raise DomainTuneError(f"bench.commits names commit {sha} twice ({rev!r}).", "Name each commit once.")
            path = Path(tempfile.mkdtemp(prefix=f"bench-{sha}-"))
            add = ["git", "worktree", "add", "--detach", "--force", str(path), sha]
            subprocess.run(add, cwd=ROOT, check=True, capture_output=True)
            made[f"domaintune@{sha}"] = path
        yield made
    finally:
        for path in made.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)


def train_rounds(
    cfg: DictConfig, commits: dict[str, Path], plan: list[str], out: Path, console: Console
) -> dict[str, list[dict[str, Any]]]:
    """Every training system (and DomainTune at every commit of `commits`) once per round, each in its own
    process, the order reversed every other round: {system: its rounds' results}."""
    names = [*(cfg.bench.only or cfg.bench.systems), *commits]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rnd in range(int(cfg.bench.rounds)):
        for name in names if rnd % 2 == 0 else reversed(names):  # alternate the order across rounds
            console.print(f"[bold]round {rnd + 1}: {name}[/bold]")
            if name in commits:  # that commit's DomainTune at its own defaults; unprofiled: a commit before stop 38
                # profiled inside its warm-up, which slowed its measured steps (devtools/bench.py, StepProfile)
                unprofiled = [o for o in passthrough() if not o.startswith("bench.profile")]
                results[name].append(run_job("domaintune", [*unprofiled, *plan, "bench.profile=0"], out, commits[name]))
            else:
                extra = [str(o) for o in (cfg.bench.systems[name].get("overrides") or [])]
                results[name].append(run_job(name, [*passthrough(), *extra, *plan], out))
            console.print(json.dumps(results[name][-1])[:400])
    return results


def identical_batches(results: dict[str, list[dict[str, Any]]]) -> dict[str, bool]:
    """Per system: did every round train on the same batches, step by step, as the reference system's first
    round (the per-step digests of the real tokens and labels: scripts/devtools/bench.py)?"""
    ok = [(k, r) for k, v in results.items() for r in v if "error" not in r]
    if not ok:
        return {}
    reference = ok[0][1]["digests"]
    return {k: all(r["digests"] == reference for r in v if "error" not in r) for k, v in results.items()}


def train_table(
    results: dict[str, list[dict[str, Any]]], reference: str, settings: dict[str, str], peak_gflops: float | None = None
) -> list[str]:
    """One row per system: medians over the rounds (the spread of answer tok/s beside them), the needed FLOPs
    per second (scripts/devtools/flops.py) and their share of the measured matmul peak, ratios of medians against
    every peer, whether its batches were the plan's (digests equal to the reference's)."""
    cols = ("answer_tok_s", "real_tok_s", "processed_tok_s", "padding_efficiency", "step_s", "peak_rss_gib", "model_gflops")
    ok = {k: [r for r in v if "error" not in r] for k, v in results.items()}
    mid = {k: {c: statistics.median([r[c] for r in v]) for c in cols} for k, v in ok.items() if v}
    same = identical_batches(results)
    peers = compared(mid, reference)
    ratio_cols = [f"answer tok/s ÷ {p}" for p in peers] + [f"RSS ÷ {p}" for p in peers]
    lines = [
        "| system | settings | batches | same batches as the first | rounds | answer tok/s (median; min-max) | real tok/s | "
        "processed tok/s | padding eff. | s/step | peak RSS GiB | GFLOP/s needed | share of matmul peak | other CPU | "
        "minor page faults/step |" + "".join(f" {c} |" for c in ratio_cols),
        "|---|---|---|---|---:|" + "---:|" * (10 + len(ratio_cols)),
    ]
    for name, a in mid.items():
        runs = ok[name]
        other = statistics.median([r["other_cpu_share"] for r in runs])
        spread = f"{min(r['answer_tok_s'] for r in runs):.1f}-{max(r['answer_tok_s'] for r in runs):.1f}"
        ratios = [f"{a['answer_tok_s'] / mid[p]['answer_tok_s']:.2f}" for p in peers]
        rss = [f"{a['peak_rss_gib'] / mid[p]['peak_rss_gib']:.2f}" for p in peers]
        share = f"{100 * a['model_gflops'] / peak_gflops:.0f}%" if peak_gflops else ""
        # results of commits older than the count (bench.commits) have none: an empty cell
        counted = [r["minor_faults_per_step"] for r in runs if "minor_faults_per_step" in r]
        faults = f"{statistics.median(counted):,.0f}" if counted else ""
        lines.append(
            f"| {name} | {settings.get(name, '')} | {runs[0].get('batches', '')} | {'yes' if same.get(name) else 'no'} | "
            f"{len(runs)} | {a['answer_tok_s']:.1f} ({spread}) | {a['real_tok_s']:.1f} | {a['processed_tok_s']:.1f} | "
            f"{a['padding_efficiency']:.3f} | {a['step_s']:.2f} | {a['peak_rss_gib']:.2f} | {a['model_gflops']:.1f} | "
            f"{share} | {100 * other:.0f}% | {faults} |" + "".join(f" {r} |" for r in [*ratios, *rss])
        )
    for name, runs in results.items():
        for r in runs:
            if "error" in r:
                lines.append(f"\n{name} failed: {r['error']}\n```\n{r['tail']}\n```")
    return lines


def compared(systems: Iterable[str], reference: str) -> list[str]:
    """The systems `reference` is divided by: the peers and DomainTune at other commits (`reference@<commit>`),
    not DomainTune's own variants (their ratios to the peers are the table's columns)."""
    return [k for k in systems if not k.startswith(reference) or k.startswith(f"{reference}@")]


def round_ratios(results: dict[str, list[dict[str, Any]]], reference: str) -> list[str]:
    """`reference`'s answer tokens/s over each compared system's, round by round: on a batch plan each round's
    systems ran the same work one after the other, so a ratio within a round is the least disturbed by the
    machine's drift, and their spread says how far one invocation's median ratio can be trusted."""
    own = results.get(reference, [])
    rows = []
    for peer in compared(results, reference):
        pairs = [(a, b) for a, b in zip(own, results[peer], strict=False) if "error" not in a and "error" not in b]
        if pairs:
            cells = " / ".join(f"{a['answer_tok_s'] / b['answer_tok_s']:.2f}" for a, b in pairs)
            rows.append(f"| {reference} ÷ {peer} | {cells} |")
    if not rows:
        return []
    title = f"Answer tokens/s of {reference} over each system's, within round 1, 2, ...:"
    return [title, "", "| ratio | rounds |", "|---|---|", *rows, ""]


def profile_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where each system's step time goes: the costliest operators of one profiled step (the last warm-up step of
    each system's first round, on the same batch when the systems replay a plan), self CPU ms side by side. The
    profiler's own overhead is in these figures; they say where, the tok/s table says how fast."""
    profiles = {k: next((r["profile"] for r in v if r.get("profile")), None) for k, v in results.items()}
    profiles = {k: {row["op"]: row for row in v} for k, v in profiles.items() if v}
    if not profiles:
        return []
    ops = list(dict.fromkeys(op for table in profiles.values() for op in table))
    ops.sort(key=lambda op: -max(t.get(op, {}).get("self_ms", 0.0) for t in profiles.values()))
    lines = [
        "One profiled step per system (torch.profiler, self CPU ms, calls in brackets): the union of each system's "
        "costliest operators, ordered by the largest figure in the row; '-' = not among that system's costliest:",
        "",
        "| operator |" + "".join(f" {k} |" for k in profiles),
        "|---|" + "---:|" * len(profiles),
    ]
    for op in ops:
        cells = [f"{t[op]['self_ms']:.1f} ({t[op]['calls']})" if op in t else "-" for t in profiles.values()]
        lines.append(f"| `{op}` |" + "".join(f" {c} |" for c in cells))
    totals = [f"{sum(r['self_ms'] for r in t.values()):.1f}" for t in profiles.values()]
    lines += ["| listed ops, total |" + "".join(f" {c} |" for c in totals), ""]
    return lines


def matmul_peak(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The matmul GFLOP/s of this machine at the model's largest matmul shape (from the first measured system),
    in the dtype the systems computed in: what a step's needed FLOP/s is set against. Measured here, in the parent,
    after the workers, so that it runs alone."""
    from devtools.flops import matmul_gflops

    ok = [r for runs in results.values() for r in runs if "error" not in r and r.get("matmul_shape")]
    if not ok:
        return None
    shape, precision = ok[0]["matmul_shape"], str(ok[0].get("precision", "32"))
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    return {"gflops": matmul_gflops(dtype, *shape), "dtype": str(dtype).removeprefix("torch."), "shape": shape}


def benchmark(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("bench_worker"):
        from devtools.bench import run_worker

        run_worker(cfg, cfg.bench, str(cfg.bench_worker), str(cfg.bench_result), cfg.get("bench_plan"))
        return {}
    out = Path(cfg.paths.output_dir)
    unknown = set(cfg.bench.parts) - {"hardware", "train", "mc", "generation"}
    if unknown:
        raise DomainTuneError(f"Unknown bench.parts {sorted(unknown)}.", "Use any of hardware, train, mc, generation.")
    unused = [
        key
        for key, idle in (
            ("bench.commits", bool(cfg.bench.commits) and "train" not in cfg.bench.parts),
            ("bench.plan_pick", cfg.bench.plan_pick != "first" and ("train" not in cfg.bench.parts or cfg.bench.plan is None)),
        )
        if idle
    ]
    if unused:
        raise DomainTuneError(
            f"{', '.join(unused)} is set but has no effect here: commits apply to the train part, plan_pick to its batch plan "
            f"(bench.parts={list(cfg.bench.parts)}, bench.plan={cfg.bench.plan}).",
            "Add train to bench.parts (and keep bench.plan=domaintune for bench.plan_pick), or leave the key at its default.",
        )
    command = " ".join(["python scripts/benchmark.py", *HydraConfig.get().overrides.task])
    report: dict[str, Any] = {"machine": machine(), "command": command}
    md = [f"Machine: {report['machine']}", f"Command: `{report['command']}`", ""]
    console = Console()
    if "hardware" in cfg.bench.parts:
        from devtools.flops import matmul_gflops

        report["matmul_gflops"] = {
            name: matmul_gflops(dt, 1024, 1024, 1024) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        }
        md += ["matmul GFLOP/s (1024²): " + ", ".join(f"{k} {v:.1f}" for k, v in report["matmul_gflops"].items()), ""]
    if "train" in cfg.bench.parts:
        unknown = set(cfg.bench.only or []) - set(cfg.bench.systems)
        if unknown:
            known = list(cfg.bench.systems)
            raise DomainTuneError(f"bench.only names unknown systems {sorted(unknown)}.", f"Use any of {known}.")
        plan: list[str] = []
        if cfg.bench.plan == "domaintune":
            from devtools.bench import batch_plan

            steps = batch_plan(cfg, int(cfg.bench.warmup) + int(cfg.bench.steps), str(cfg.bench.plan_pick))
            (out / "batch_plan.json").write_text(json.dumps(steps))
            plan = [f"+bench_plan={out / 'batch_plan.json'}"]
            report["batch_plan"] = steps
        elif cfg.bench.plan is not None:
            raise DomainTuneError(f"bench.plan={cfg.bench.plan!r} is not a batch plan.", "Use domaintune or null.")
        with checkouts([str(c) for c in cfg.bench.commits or []]) as commits:
            results = train_rounds(cfg, commits, plan, out, console)
        report["train"] = results
        report["identical_batches"] = identical_batches(results)
        settings = {name: str(cfg.bench.systems[name].get("settings") or "") for name in results if name not in commits}
        settings |= {name: f"defaults at commit {name.split('@')[1]}" for name in commits}
        report["matmul_peak"] = peak = matmul_peak(results)
        md += [
            f"Training: {cfg.bench.steps} measured steps after {cfg.bench.warmup} warm-up, batch {cfg.data.batch_size}, "
            f"max_length {cfg.data.max_length}, adapter {cfg.adapter.name}, {cfg.bench.rounds} round(s), batches: "
            + ("DomainTune's batch plan, replayed by every system (batch_plan.json)" if plan else "each system's own"),
            "",
            *train_table(results, "domaintune", settings, peak["gflops"] if peak else None),
            "",
            *round_ratios(results, "domaintune"),
            *(
                [
                    f"Matmul peak the share is read against: {peak['gflops']:.1f} GFLOP/s, {peak['dtype']} "
                    f"({peak['shape'][0]} x {peak['shape'][1]}) @ ({peak['shape'][1]} x {peak['shape'][2]}), the model's "
                    "largest matmul at a step's mean real tokens; needed FLOPs as in scripts/devtools/flops.py",
                    "",
                ]
                if peak
                else []
            ),
            *profile_table(results),
        ]
    for part in ("mc", "generation"):
        if part in cfg.bench.parts:
            console.print(f"[bold]{part}[/bold]")
            report[part] = run_job(part, passthrough(), out)
            console.print(json.dumps(report[part])[:600])
            md += mc_lines(report[part]) if part == "mc" else generation_lines(report[part])
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    (out / "benchmark.md").write_text("\n".join(md) + "\n")
    console.print("\n".join(md))
    console.print(f"Written: {out / 'benchmark.md'}")
    return {}


def mc_lines(mc: dict[str, Any]) -> list[str]:
    lines = []
    if "error" in mc:
        lines.append(f"PIQA failed: {mc['error']}")
    else:
        lines += [
            f"Multiple choice ({mc['items']} items; scores identical to lm-evaluation-harness: {mc['identical']}):",
            "",
            "| scorer | batch | s | acc | acc_norm | lm-eval s ÷ ours |",
            "|---|---:|---:|---:|---:|---:|",
            f"| DomainTune | {mc['batch_size']} | {mc['ours_s']:.1f} | {mc['ours']['acc']:.2f} | "
            f"{mc['ours']['acc_norm']:.2f} | |",
            *(
                f"| lm-evaluation-harness | {size} | {r['s']:.1f} | {r['acc']:.2f} | {r['acc_norm']:.2f} | "
                f"{mc['speedup'][size]:.2f} |"
                for size, r in mc["lm_eval"].items()
            ),
            "",
        ]
    return lines


def generation_lines(gen: dict[str, Any]) -> list[str]:
    lines = []
    if "error" in gen:
        lines.append(f"Generation failed: {gen['error']}")
    else:
        lines += [
            f"Generation ({gen['prompts']} prompts, greedy, max {gen['max_new_tokens']} new tokens; ours batch "
            f"{gen['batch_size']}, length-sorted; the plain loop's batch {gen['plain_batch_size']}, file order; same answers "
            f"everywhere: {gen['same_answers']}):",
            "",
            "| path | wall s (whole call) | tokens | generated tokens/s |",
            "|---|---:|---:|---:|",
            *(
                f"| {k} | {gen[k]['s']:.1f} | {gen[k]['tokens']} | {gen[k]['tok_s']:.1f} |"
                for k in ("plain_loop_base", "ours_base", "ours_tuned_merged", "ours_tuned_unmerged")
            ),
            "",
            f"tuned (merged) / base: {gen['tuned_vs_base']:.2f}; tuned unmerged / base: {gen['unmerged_vs_base']:.2f}; "
            f"ours / plain loop: {gen['ours_vs_plain_loop']:.2f}",
        ]
    return lines


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_task(benchmark, cfg)


if __name__ == "__main__":
    main()
