"""Benchmark workers: one system's training speed, or evaluation speed, measured in its own process.

`scripts/benchmark.py` runs each worker as a subprocess (one at a time, alternating between systems), so
every system gets a fresh process and its own peak RSS. All training systems get identical work: the same
model files, the same token ids and answer-only labels from DomainTune's pipeline (so the same chat
rendering and masking), the same LoRA config, precision, batch size, learning-rate schedule and seed.
TRL and lm-eval are imported here only (the `bench` extra); the runtime never needs them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import domaintune
from domaintune.models.loss import IGNORE
from domaintune.models.optim import Optimization
from domaintune.utils.config import settings
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.hardware import resolve_precision
from domaintune.utils.hydra import build

from .flops import ModelShape, step_flops


# ---------------------------------------------------------------------------------------------- identical work
class PlanSampler(torch.utils.data.Sampler[list[int]]):
    """A batch sampler that yields a fixed batch plan (the example indices of every step, in order)."""

    def __init__(self, plan: list[list[int]]) -> None:
        self.plan = plan

    def __iter__(self) -> Any:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def batch_plan(cfg: DictConfig, steps: int, pick: str) -> list[list[int]]:
    """The example indices of `steps` of DomainTune's training batches at `cfg`'s data settings (its own seeded,
    length-grouped sampler), which every system then replays with its own collation: the same examples in the
    same batches in the same order, so a step's time compares like with like. `pick`: `first`, its first
    `steps` batches; `longest`, the `steps` batches of its first epoch with the most positions (rows x the
    longest row), in epoch order: the steps that weigh most in a whole epoch, which the first few may not show."""
    from domaintune.models.loading import load_tokenizer

    if pick not in ("first", "longest"):
        raise DomainTuneError(f"bench.plan_pick={pick!r} is not a way to pick the plan's batches.", "Use first or longest.")
    dm = build(cfg.data, tokenizer=load_tokenizer(cfg.model))
    dm.prepare()
    if dm.batching()["packed"]:
        raise ValueError("bench.plan replays example batches; the data settings pack rows: set data.packing=false")
    sampler = dm.train_dataloader().batch_sampler
    if pick == "first":
        return [list(b) for b in itertools.islice(iter(sampler), steps)]
    rows = dm.train_rows()
    epoch = [list(b) for b in itertools.islice(iter(sampler), len(sampler))]
    positions = [len(b) * max(len(rows[i]["input_ids"]) for i in b) for b in epoch]
    chosen = sorted(sorted(range(len(epoch)), key=lambda k: -positions[k])[:steps])
    return [epoch[k] for k in chosen]


def batch_digest(batch: dict[str, torch.Tensor]) -> str:
    """A digest of a collated batch's real tokens and labels, row by row, padding (either side) removed: equal
    digests on two systems mean they trained on the same examples in that step."""
    mask = batch.get("attention_mask")
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        keep = mask[i].bool() if mask is not None else torch.ones_like(batch["input_ids"][i], dtype=torch.bool)
        rows.append((batch["input_ids"][i][keep].tolist(), batch["labels"][i][keep].tolist()))
    return hashlib.sha1(json.dumps(sorted(rows)).encode()).hexdigest()[:12]


def sequence_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    """The real length of every sequence the step attends over: a row's real tokens, or in a packed row each
    example's (its positions restart at 0), what the attention term of the FLOP count needs."""
    ids = batch["input_ids"]
    if "position_ids" in batch:
        lengths = []
        for i, positions in enumerate(batch["position_ids"]):
            real = int(batch["n_real"][i]) if "n_real" in batch else ids.shape[1]
            starts = [int(j) for j in torch.nonzero(positions[:real] == 0).flatten()] + [real]
            lengths += [b - a for a, b in itertools.pairwise(starts) if b > a]
        return lengths
    if "n_real" in batch:
        return [int(n) for n in batch["n_real"]]
    if batch.get("attention_mask") is not None:
        return [int(n) for n in batch["attention_mask"].sum(dim=1)]
    return [ids.shape[1]] * ids.shape[0]


def batch_stats(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Tokens that enter the loss, real (non-padding) tokens, tokens the model processes, and each sequence's
    real length (for the FLOP count)."""
    labels = batch["labels"]
    rows = sequence_lengths(batch)
    return {
        "answer": int((labels[:, 1:] != IGNORE).sum()),
        "real": sum(rows),
        "processed": labels.numel(),
        "rows": rows,
        "digest": batch_digest(batch) if "position_ids" not in batch else "packed",
    }


def step_mark() -> tuple[float, int]:
    """The clock and the minor page faults this process has taken so far, read at a step's end; two marks apart
    give a step's seconds and faults. A minor fault needs no disk: it is a page of fresh memory touched for the
    first time (the kernel zeroes it), what an allocator that hands memory back to the system and maps it again
    costs on every large tensor of every step."""
    return time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def summarise(times: list[float], stats: list[dict[str, Any]], model: torch.nn.Module, faults: list[int]) -> dict[str, Any]:
    """Throughput over the measured steps (after warm-up): totals / total time, not a mean of ratios. The
    needed FLOPs of those steps (scripts/devtools/flops.py) over the same time give the achieved GFLOP/s.
    `faults`: the minor page faults of each measured step."""
    total = sum(times)
    sums = {k: sum(s[k] for s in stats) for k in ("answer", "real", "processed")}
    shape = ModelShape.of(model)
    parts = [step_flops(shape, s["rows"], s["answer"]) for s in stats]
    flops = {k: sum(p[k] for p in parts) for k in parts[0]} if parts else {}
    return {
        "model_gflops": sum(flops.values()) / total / 1e9 if parts else 0.0,
        "flops_by_part": flops,
        # the peak is measured at this matmul shape: a step's real tokens x hidden -> intermediate
        "matmul_shape": [round(sums["real"] / max(len(stats), 1)), shape.hidden, shape.intermediate],
        "steps": len(times),
        "step_s": total / len(times),
        "answer_tok_s": sums["answer"] / total,
        "real_tok_s": sums["real"] / total,
        "processed_tok_s": sums["processed"] / total,
        "padding_efficiency": sums["real"] / sums["processed"],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "minor_faults_per_step": sum(faults) / max(len(faults), 1),
        # per measured step: seconds and the batch's digest (scripts/benchmark.py compares them across systems)
        "step_times": times,
        "digests": [s["digest"] for s in stats],
    }


# ---------------------------------------------------------------------------------------------- DomainTune
class StepProfile:
    """torch.profiler over one extra step after the measured ones (untimed): its `ops` costliest operators by self
    CPU time, for the table that says where a system's step time goes (scripts/benchmark.py). ops=0: no profile.

    Why after them, not in a warm-up step (as before stop 38): the steps that followed a profiled step ran ~10%
    slower in the same process (a bf16 DomainTune step: 3.34 s/step with the warm-up profiled against 2.98 s
    without, RESULTS.md stop 38), so a profile in the warm-up slowed every measured step. The extra step trains on
    the plan's last batch again, and neither its time nor its batch enter the results."""

    def __init__(self, measured_through: int, ops: int) -> None:
        self.step, self.ops = measured_through + 1, ops
        self._profiler: Any = None
        self.table: list[dict[str, Any]] = []

    @property
    def extra_steps(self) -> int:
        """Steps a worker runs beyond warm-up and measured ones: the profiled step, if any."""
        return 1 if self.ops else 0

    @property
    def total_steps(self) -> int:
        """Every step a worker runs: warm-up, measured and the profiled one, if any."""
        return self.step - 1 + self.extra_steps

    def plan(self, plan: list[list[int]] | None) -> list[list[int]] | None:
        """The batch plan a worker replays: the timed plan, and its last batch again for the profiled step."""
        return plan if plan is None or not self.extra_steps else [*plan, plan[-1]]

    def begin(self, step: int) -> None:
        """Called at the start of every step (1-based)."""
        if self.ops and step == self.step:
            self._profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self._profiler.start()

    def end(self) -> None:
        """Called at the end of every step, after its time is read."""
        if self._profiler is None:
            return
        self._profiler.stop()
        events = sorted(self._profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        self.table = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in events[: self.ops]]
        self._profiler = None


class StepTimer(pl.Callback):
    """Wall time between consecutive batch ends (data, forward, backward, optimizer: the whole step)."""

    def __init__(self, warmup: int, steps: int, profile: StepProfile) -> None:
        self.warmup, self.steps, self.profile = warmup, steps, profile
        self.times: list[float] = []
        self.faults: list[int] = []
        self.stats: list[dict[str, Any]] = []
        self._last: tuple[float, int] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        self.profile.begin(trainer.global_step + 1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int) -> None:
        now = step_mark()
        if self._last is not None and self.warmup < trainer.global_step <= self.warmup + self.steps:
            self.times.append(now[0] - self._last[0])
            self.faults.append(now[1] - self._last[1])
            self.stats.append(batch_stats(batch))
        self.profile.end()
        self._last = step_mark()


def domaintune_train(
    cfg: DictConfig, steps: int, warmup: int, plan: list[list[int]] | None, profile: StepProfile
) -> dict[str, Any]:
    """DomainTune's own training path: `train.prepare_training` (the code `train.py` runs) and Lightning's fit.
    With a plan, its batch sampler is swapped for the plan (rows and collation stay DomainTune's); a variant that
    packs rows cannot replay example batches and trains on its own (the result says which)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from domaintune.core.pipeline import prepare_training

    timer = StepTimer(warmup, steps, profile)
    plan = profile.plan(plan)
    with open_dict(cfg):
        cfg.trainer.max_steps = profile.total_steps
    trainer, module, dm, *_ = prepare_training(cfg, callbacks=[timer], base_eval=False)
    batches = "own: " + dm.batching()["mode"]
    if plan is not None and not dm.batching()["packed"]:

        def replay() -> StatefulDataLoader:
            return StatefulDataLoader(dm.train_rows(), batch_sampler=PlanSampler(plan), collate_fn=dm.train_collate)

        dm.train_dataloader = replay
        batches = "plan"
    trainer.fit(module, datamodule=dm)
    measured = summarise(timer.times, timer.stats, module.model, timer.faults)
    return {**measured, "batching": dm.batching()["mode"], "batches": batches}


# ---------------------------------------------------------------------------------------------- peers
def _peer_setup(cfg: DictConfig) -> tuple[Any, Any, Any, bool]:
    """The model with the same LoRA, the tokenizer, DomainTune's prepared DataModule, bf16 or not. The peers get
    LoRA as PEFT builds and runs it (its own `nn.Dropout` and forward) on transformers' own model:
    `adapter.fast_dropout`, `adapter.fold_scales`, `adapter.keep_casts`, `model.fused_norm` and `model.autocast_rope` are
    DomainTune's, not theirs (`model.attention_fp32_backward_below` acts in DomainTune's loss, which they do not call)."""
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loading import load_model

    pl.seed_everything(cfg.seed)
    model, tok = load_model(OmegaConf.merge(cfg.model, {"fused_norm": False, "autocast_rope": False}))
    dm = build(cfg.data, tokenizer=tok)
    dm.prepare()
    ours = {k: False for k in ("fast_dropout", "fold_scales", "keep_casts") if k in cfg.adapter}
    adapter = OmegaConf.merge(cfg.adapter, ours)
    model = apply_adapter(model, adapter, peft_config(adapter)).train()
    bf16 = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator).startswith("bf16")
    return model, tok, dm, bf16


def _peer_args(cfg: DictConfig, dm: Any, total: int, bf16: bool, out: str) -> dict[str, Any]:
    """TrainingArguments shared by both peers, matching DomainTune's optim/trainer settings (read from the
    objects DomainTune builds: the DataModule and the Optimization); `total`: every step the worker runs."""
    optim: Optimization = instantiate(cfg.optim)
    return {
        "output_dir": out,
        "per_device_train_batch_size": int(dm.batch_size),
        "max_steps": total,
        "learning_rate": float(optim.lr),
        "weight_decay": float(optim.weight_decay),
        "lr_scheduler_type": str(optim.scheduler.keywords["name"]),
        "warmup_steps": optim.warmup(total),
        "max_grad_norm": float(cfg.trainer.gradient_clip_val),
        "bf16": bf16,
        "use_cpu": cfg.trainer.accelerator == "cpu",
        "seed": int(cfg.seed),
        "save_strategy": "no",
        "report_to": [],
        "logging_steps": 10_000,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


class _Recorder:
    """A collator wrapper that keeps each batch's token counts, and a callback that times each step."""

    def __init__(self, collate: Any, warmup: int, steps: int, model: torch.nn.Module, profile: StepProfile) -> None:
        self.collate, self.warmup, self.steps, self.model, self.profile = collate, warmup, steps, model, profile
        self.batches: list[dict[str, int]] = []
        self.ends: list[tuple[float, int]] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate(features)
        self.batches.append(batch_stats(batch))
        return batch

    def callback(self) -> Any:
        from transformers import TrainerCallback

        recorder = self

        class Times(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                recorder.profile.begin(state.global_step + 1)

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                recorder.ends.append(step_mark())
                recorder.profile.end()

        return Times()

    def result(self) -> dict[str, Any]:
        # step k (1-based) ran on the k-th collated batch and took ends[k-1] - ends[k-2]; measured: warmup < k <=
        # warmup + steps (a profiled step after them is not)
        steps = range(self.warmup + 1, min(len(self.ends), self.warmup + self.steps) + 1)
        times = [self.ends[k - 1][0] - self.ends[k - 2][0] for k in steps]
        faults = [self.ends[k - 1][1] - self.ends[k - 2][1] for k in steps]
        return summarise(times, [self.batches[k - 1] for k in steps], self.model, faults)


def replaying(trainer_class: type, plan: list[list[int]] | None) -> type:
    """`trainer_class` whose training batches follow `plan` (None: the class as it is, its own sampling). Only
    the batch sampler changes: the peer's collator, loop and accelerator preparation stay its own."""
    if plan is None:
        return trainer_class

    class Replaying(trainer_class):  # type: ignore[misc, valid-type]
        def get_train_dataloader(self) -> Any:
            loader = torch.utils.data.DataLoader(
                self.train_dataset, batch_sampler=PlanSampler(plan), collate_fn=self.data_collator
            )
            return self.accelerator.prepare(loader)

    return Replaying


def _peer_data(dm: Any) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in dm.examples["train"]])


def hf_trainer_train(
    cfg: DictConfig, steps: int, warmup: int, plan: list[list[int]] | None, profile: StepProfile, **options: Any
) -> dict[str, Any]:
    """A plain transformers `Trainer` + PEFT on the same examples (padded per batch, labels -100); `options` are
    TrainingArguments as the system's config sets them (e.g. train_sampling_strategy: group_by_length)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model, tok, dm, bf16 = _peer_setup(cfg)
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE)
    recorder = _Recorder(collate, warmup, steps, model, profile)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**_peer_args(cfg, dm, profile.total_steps, bf16, out), remove_unused_columns=False, **options)
        replaying(Trainer, profile.plan(plan))(
            model=model, args=args, train_dataset=_peer_data(dm), data_collator=recorder, callbacks=[recorder.callback()]
        ).train()
    return {**recorder.result(), "batches": "plan" if plan is not None else "own"}


def trl_train(
    cfg: DictConfig, steps: int, warmup: int, plan: list[list[int]] | None, profile: StepProfile, **options: Any
) -> dict[str, Any]:
    """TRL's `SFTTrainer` given the same pre-tokenised examples (input_ids + labels); `options` are SFTConfig
    settings as the system's config sets them (e.g. gradient_checkpointing: false)."""
    from trl import SFTConfig, SFTTrainer

    model, tok, dm, bf16 = _peer_setup(cfg)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(**_peer_args(cfg, dm, profile.total_steps, bf16, out), max_length=dm.recipe.max_length, **options)
        trainer = replaying(SFTTrainer, profile.plan(plan))(
            model=model, args=args, train_dataset=_peer_data(dm), processing_class=tok
        )
        recorder = _Recorder(trainer.data_collator, warmup, steps, trainer.model, profile)
        trainer.data_collator = recorder
        trainer.add_callback(recorder.callback())
        trainer.train()
    return {**recorder.result(), "batches": "plan" if plan is not None else "own"}


TRAINERS = {"domaintune": domaintune_train, "hf_trainer": hf_trainer_train, "trl": trl_train}


# ---------------------------------------------------------------------------------------------- evaluation
def mc_speed(cfg: DictConfig, bench: DictConfig) -> dict[str, Any]:
    """PIQA through our scorer and through lm-evaluation-harness, same model object and items."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    from domaintune.evaluation import metrics, multiple_choice
    from domaintune.models.loading import load_model

    b = cfg.eval.benchmarks[bench.benchmark]
    items = multiple_choice.load_items(b.dir, list(b.split) if not isinstance(b.split, str) else b.split, bench.mc_max_items)
    model, tok = load_model(cfg.model)
    model.eval()
    started = time.perf_counter()
    ours = metrics.values(
        multiple_choice.evaluate(
            model,
            tok,
            items,
            b.prompt,
            b.delimiter,
            int(b.batch_size),
            bool(cfg.eval.share_context),
            bool(cfg.model.answer_only_logits),
        )
    )
    ours_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        rows = [{"question": i.question, "choices": i.choices, "answer_index": i.answer} for i in items]
        Path(tmp, "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        # lm-eval's own PIQA prompt; our config's template renders the same text (checked by the tests)
        Path(tmp, "dt_bench.yaml").write_text(
            "task: dt_bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {Path(tmp, 'items.jsonl')}\noutput_type: multiple_choice\ntest_split: test\n"
            'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: answer_index\ndoc_to_choice: "{{choices}}"\n'
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )
        runs = {}
        for size in bench.lm_eval_batch_sizes:
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=int(size))
            # building the task (indexing lm-eval's thousands of task YAMLs) and loading its items stay outside the
            # timer, as our item loading does: the timer holds the scoring of each side only
            tasks = get_task_dict(["dt_bench"], TaskManager(include_path=tmp))
            started = time.perf_counter()
            theirs = evaluate(lm=lm, task_dict=tasks)
            res = theirs["results"]["dt_bench"]
            runs[int(size)] = {
                "s": time.perf_counter() - started,
                "acc": 100 * res["acc,none"],
                "acc_norm": 100 * res["acc_norm,none"],
            }
    return {
        "items": len(items),
        "batch_size": int(b.batch_size),
        "ours_s": ours_s,
        "ours": ours,
        "lm_eval": runs,
        "speedup": {size: r["s"] / ours_s for size, r in runs.items()},
        "identical": all(abs(ours[k] - r[k]) < 1e-9 for r in runs.values() for k in ("acc", "acc_norm")),
    }


def generation_speed(cfg: DictConfig, bench: DictConfig) -> dict[str, Any]:
    """Generated tokens/s: base vs tuned (LoRA merged, and unmerged for reference), and our batched
    generation vs a plain transformers `generate` loop over the same prompts in file order."""
    from domaintune.evaluation.generation import generate, with_answer_limit
    from domaintune.evaluation.settings import Generation as GenerationSettings
    from domaintune.models.adapters import apply_adapter, peft_config
    from domaintune.models.loading import load_model

    model, tok = load_model(cfg.model)
    dm = build(cfg.data, tokenizer=tok)
    dm.prepare()
    convs = [dm.conversation(r) for r in dm.records[cfg.eval.split][: int(bench.gen_prompts)]]
    # `auto` as the evaluation resolves it
    gcfg = with_answer_limit(dm, settings(GenerationSettings, cfg.eval.generation, "eval.generation"))[0].options()
    out: dict[str, Any] = {
        "prompts": len(convs),
        "max_new_tokens": gcfg["max_new_tokens"],
        "batch_size": gcfg["batch_size"],
        "plain_batch_size": int(bench.plain_batch_size),
    }

    def timed(name: str, fn: Any) -> None:
        """Wall seconds of the whole call, and tokens/s of generation (ours exclude the one-off adapter merge)."""
        started = time.perf_counter()
        texts, tokens, rate = fn()
        wall = time.perf_counter() - started
        out[name] = {"s": wall, "tokens": tokens, "tok_s": rate or tokens / wall}
        out.setdefault("_texts", {})[name] = texts

    def ours(m: Any, merge: bool = True) -> Any:
        gens, stats = generate(m, tok, dm.renderer, convs, gcfg, merge_adapter=merge and bool(cfg.eval.merge_adapter))
        return [g.text for g in gens], stats.answer_tokens, stats.answer_tokens_per_s

    def plain(m: Any, batch_size: int) -> Any:
        """What a user writes with transformers alone: chat template, left padding, generate, file order."""
        tok.padding_side = "left"
        texts, tokens = [], 0
        stops = dm.renderer.stop_token_ids()
        with torch.inference_mode():
            for i in range(0, len(convs), batch_size):
                prompts = [
                    tok.apply_chat_template(c[:-1], tokenize=False, add_generation_prompt=True) for c in convs[i : i + batch_size]
                ]
                enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                new = m.generate(
                    **enc,
                    max_new_tokens=int(gcfg["max_new_tokens"]),
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=tok.pad_token_id,
                )
                for row in new[:, enc["input_ids"].shape[1] :].tolist():
                    cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                    tokens += cut
                    texts.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
        return texts, tokens, None

    model.eval()
    timed("plain_loop_base", lambda: plain(model, int(bench.plain_batch_size)))
    timed("ours_base", lambda: ours(model))
    tuned = apply_adapter(model, cfg.adapter, peft_config(cfg.adapter)).eval()
    # a fresh LoRA (B = 0): the same answers, so the same work
    timed("ours_tuned_merged", lambda: ours(tuned))
    timed("ours_tuned_unmerged", lambda: ours(tuned, merge=False))
    texts = out.pop("_texts")
    out["same_answers"] = len({tuple(t) for t in texts.values()}) == 1
    out["tuned_vs_base"] = out["ours_tuned_merged"]["tok_s"] / out["ours_base"]["tok_s"]
    out["unmerged_vs_base"] = out["ours_tuned_unmerged"]["tok_s"] / out["ours_base"]["tok_s"]
    out["ours_vs_plain_loop"] = out["ours_base"]["tok_s"] / out["plain_loop_base"]["tok_s"]
    return out


def run_worker(cfg: DictConfig, bench: DictConfig, system: str, result: str, plan_file: str | None) -> None:
    """Entry of one benchmark subprocess: measure, then write the result JSON."""
    started = time.perf_counter()
    if system in ("mc", "generation"):
        data = mc_speed(cfg, bench) if system == "mc" else generation_speed(cfg, bench)
    else:
        spec = bench.systems[system]
        plan = json.loads(Path(plan_file).read_text()) if plan_file else None
        options = dict(spec.get("options") or {})
        if options and spec.kind == "domaintune":
            raise ValueError(f"bench.systems.{system}: DomainTune variants take config overrides, not options")
        profile = StepProfile(int(bench.warmup) + int(bench.steps), int(bench.profile))
        data = TRAINERS[str(spec.kind)](cfg, int(bench.steps), int(bench.warmup), plan, profile, **options)
        data["profile"] = profile.table
        data["precision"] = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    data["wall_s"] = time.perf_counter() - started
    # which copy of the package measured (another commit's worktree in a commit comparison: bench.commits)
    data["code"] = str(Path(domaintune.__file__).resolve().parent)
    Path(result).write_text(json.dumps(data, indent=2))
