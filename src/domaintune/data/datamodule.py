"""The LightningDataModule: a thin shell over the stages, each in its own module: load (sources.py) ->
preprocess + audit (preprocess.py) -> render + tokenise + mask (tokenize.py) -> mixture (mixture.py) ->
cache (cache.py) -> batches (packing.py, collate.py).

A data config describes one source and task, or a `components` mixture of several data configs with
sampling weights (multi-domain training, replay of general data). The prepared splits are cached on disk,
keyed on everything that shapes them, so a second run skips preprocessing.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from domaintune import __version__
from domaintune.data.audit_report import MAX_EXAMPLES, Audit, StepReport, plot_lengths, print_audit
from domaintune.data.cache import read_prepared, write_prepared
from domaintune.data.chat import ChatRenderer
from domaintune.data.collate import choice_collate, pad_collate, pair_collate
from domaintune.data.formats import Message, Task
from domaintune.data.mixture import mix
from domaintune.data.packing import EpochBatches, check_packing, group_by_length, pack, padding_efficiency
from domaintune.data.preprocess import Preprocessor
from domaintune.data.recipe import DataRecipe
from domaintune.data.sources import ReadStats, load_records, locate, origin_of
from domaintune.data.tokenize import tokenize_split
from domaintune.models.loss import IGNORE
from domaintune.utils.errors import DomainTuneError, unknown_option
from domaintune.utils.files import locked
from domaintune.utils.hydra import build
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

PACKING = (True, False, "auto")
# Bump when preprocessing or tokenisation changes what a config produces.
PIPELINE_VERSION = 2


class DomainDataModule(pl.LightningDataModule):
    """Supervised fine-tuning data for one data config (a domain, your files, or a mixture).

    `records[split]` (canonical fields, `_task` names the component) and `examples[split]` (token ids +
    labels) stay aligned, so evaluation can generate from a record's prompt and compare with its reference.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int,
        eval_batch_size: int,
        val_max_samples: int | None,
        num_workers: int,
        packing: bool | str,
        packing_min_gain: float,
        group_by_length: bool,
        cache: bool,
        cache_dir: str | None,
        primary_metric: str,
        packing_allowed: bool = True,
        pairs: bool = False,
        choices: bool = False,
        **recipe: Any,
    ):
        """Built by `hydra.utils.instantiate(cfg.data, tokenizer=...)`. The named arguments say how batches are
        served; every other data key is the `DataRecipe` (data/recipe.py), which alone decides what the prepared
        examples are (and so the cache key). `packing_allowed=False` for adapters that prepend virtual tokens
        (prompt/prefix tuning): packed rows restart positions, which they cannot hold, so `packing: auto` never
        packs and `packing: true` is refused. `pairs=True` (objective=dpo/orpo) serves training and validation
        batches as preference pairs (`collate.pair_collate`); evaluation batches stay the chosen answers.
        `choices=True` (objective=choice) serves them as one shared row per label record (`collate.choice_collate`)."""
        super().__init__()
        # a component's serving keys are the mixture's: its batches are formed after mixing
        self.recipe = DataRecipe.from_keys(recipe, "data", ignore=SERVING_ARGUMENTS)
        self.tokenizer = tokenizer
        self.seed = self.recipe.seed
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_max_samples, self.num_workers = val_max_samples, int(num_workers)
        self.packing, self.packing_min_gain, self.group_by_length = packing, float(packing_min_gain), bool(group_by_length)
        self.cache_dir = Path(str(cache_dir)).expanduser() if cache and cache_dir else None
        # read by the evaluation and the reports (it does not change the prepared examples, so not in the recipe)
        self.primary_metric = str(primary_metric)
        self.renderer = ChatRenderer(tokenizer, self.recipe.max_length)
        self.parts = self.recipe.components
        self.tasks = {name: Task(**c.task) for name, c in self.parts.items()} or {"": Task(**self.recipe.task)}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.audit = Audit()
        self.from_cache: Path | None = None
        self.packing_allowed = packing_allowed
        self.pairs, self.choices = bool(pairs), bool(choices)
        if (self.pairs or self.choices) and packing is True:
            raise DomainTuneError(
                f"data.packing=true with objective={'choice' if self.choices else 'dpo/orpo'}: its rows are "
                f"{'a prompt and every label' if self.choices else 'chosen + rejected answers'}, not packed.",
                "Use data.packing=auto or false with this objective.",
            )
        if packing not in PACKING:
            raise unknown_option("data.packing value", str(packing), map(str, PACKING), "Use data.packing=auto, true or false.")
        check_packing(packing, virtual_tokens=not packing_allowed)
        self._batching: dict[str, Any] | None = None
        self._efficiency: dict[str, float] | None = None

    def task_of(self, rec: dict[str, Any]) -> Task:
        return self.tasks[rec.get("_task", "")]

    def conversation(self, rec: dict[str, Any]) -> list[Message]:
        return self.task_of(rec).conversation(rec)

    # ------------------------------------------------------------------ building
    def prepare(self) -> None:
        """Build every split once (idempotent; Lightning's setup() calls it too), from the cache if possible."""
        if self.examples:
            return
        self._prepare_examples()
        if self.choices:
            for split in ("train", "validation"):
                self._attach_choices(split)

    def _prepare_examples(self) -> None:
        cache = self._cache_file()
        if cache is None:
            self._build()
            return
        # One process builds while the others wait, then they all read its file (sweeps with parallel jobs).
        with locked(cache):
            cached = read_prepared(cache) if cache.exists() else None
            if cached is not None:
                self.records, self.examples, self.audit = cached
                self.from_cache = cache
                log.info(f"Loaded the prepared data from the cache ({cache}); preprocessing skipped")
                return
            self._build()
            write_prepared(cache, self.records, self.examples, self.audit)

    def _build(self) -> None:
        started = time.perf_counter()
        if self.parts:
            self._prepare_mixture()
        else:
            self.records, self.examples = self._prepare_source(self.recipe, self.tasks[""], "", self.audit)
        self.audit.check()
        self.audit.notes.append(f"prepared in {time.perf_counter() - started:.1f} s (load, preprocess, tokenise)")
        log.info(self.audit.notes[-1])

    def _prepare_source(
        self, recipe: DataRecipe, task: Task, name: str, audit: Audit
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        stats = ReadStats()
        raw = load_records(recipe, stats)
        prefix = f"{name}/" if name else ""
        for split, records in raw.items():
            skipped = stats.skipped.get(split, {})
            audit.add(
                prefix + split,
                StepReport(
                    "read",
                    len(records) + sum(skipped.values()),
                    len(records),
                    removed=dict(skipped),
                    examples=[{"record": e} for e in stats.examples][:MAX_EXAMPLES],
                ),
            )
            if not records:
                raise DomainTuneError(
                    f"The {prefix}{split} split has no records (a train-only source is cut by data.split_ratios "
                    f"{recipe.split_ratios}, which leaves none for it here).",
                    f"Add a {split} file, or give more records so every split gets some.",
                )
            task.check_columns({k for r in records for k in r if not k.startswith("_")}, origin_of(records[0]["_src"]))
            cap = recipe.max_samples
            if cap is not None and len(records) > int(cap):
                audit.add(
                    prefix + split,
                    StepReport("max_samples", len(records), int(cap), removed={"over_max_samples": len(records) - int(cap)}),
                )
                raw[split] = records[: int(cap)]
        preprocessor: Preprocessor = build(recipe.preprocess, task=task)
        clean = preprocessor.run(raw, audit, recipe.on_error, prefix)
        records, examples = {}, {}
        renderer = ChatRenderer(self.tokenizer, recipe.max_length)
        too_long = preprocessor.too_long
        for split, recs in clean.items():
            for r in recs:
                r["_task"] = name
            records[split], examples[split] = tokenize_split(prefix + split, recs, task, renderer, too_long, audit)
        return records, examples

    def _prepare_mixture(self) -> None:
        """Prepare each component through its own stages, then mix them (data/mixture.py)."""
        weights = {name: float(self.recipe.weights.get(name, 1.0)) for name in self.parts}
        built = {name: self._prepare_source(part, self.tasks[name], name, self.audit) for name, part in self.parts.items()}
        self.records, self.examples = mix(built, weights, self.recipe.size, self.seed, self.audit)

    # ------------------------------------------------------------------ cache
    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "data" / f"{self.recipe.name}-{self.fingerprint()[:16]}.json"

    @functools.cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256(f"{__version__}|{PIPELINE_VERSION}".encode())
        h.update(json.dumps(self.recipe.as_dict(), sort_keys=True, default=str).encode())
        for part in self.recipe.sources():
            h.update(locate(part).fingerprint(str(part.revision)).encode())
        h.update(hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).digest())
        h.update(str(self.tokenizer.chat_template).encode())
        return h.hexdigest()

    def fingerprint(self) -> str:
        """What the prepared examples depend on: sources' bytes (or hub revision), the data config, the
        tokenizer and chat template, the seed. Names the cache file; checkpoints record it. Hashed once:
        it reads every source file."""
        return self._fingerprint

    def _attach_choices(self, split: str) -> None:
        """For objective=choice: every label's answer after each record's prompt (`choices`, token ids from where
        the answers start), the reference label's index (`gold`) and where the shared prompt ends (`choice_prefix`).
        Rendered by the task's own templates, so the reference's answer is exactly the tokens SFT trains. Not part
        of the prepared (cached) examples: the same preparation serves every objective."""
        for rec, ex in zip(self.records.get(split, []), self.examples.get(split, []), strict=True):
            task = self.task_of(rec)
            if not task.labels or "label" not in rec:
                raise DomainTuneError(
                    f"objective=choice scores every label of a record, and {rec['_src']} has no label set (task type "
                    f"'{task.type}').",
                    "Use objective=choice with label tasks (data.task.labels set, e.g. data=fact_checking), or objective=sft.",
                )
            variants = self.renderer.encode_many(
                [task.conversation({**rec, "label": label}) for label in task.labels], task.train_on
            )
            # each label's trained positions: its answer, ending with the end-of-turn token (what follows is untrained)
            trained = [[i for i, t in enumerate(v.labels) if t != IGNORE] for v in variants]
            prefix = min((pos[0] for pos in trained if pos), default=0)
            gold = task.labels.index(rec["label"])
            prompts = {tuple(v.input_ids[:prefix]) for v in variants}
            if (
                any(v.truncated or not pos for v, pos in zip(variants, trained, strict=True))
                or len(prompts) != 1
                or variants[gold].input_ids != list(ex["input_ids"])
            ):
                raise DomainTuneError(
                    f"{rec['_src']}: its labels' answers do not all fit data.max_length={self.renderer.max_length} after "
                    "the same prompt, so objective=choice cannot score them side by side.",
                    "Raise data.max_length (the data report shows the longest examples) or shorten the prompt.",
                )
            ex["choices"] = [v.input_ids[prefix : pos[-1] + 1] for v, pos in zip(variants, trained, strict=True)]
            ex["choice_prefix"], ex["gold"] = prefix, gold

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # ------------------------------------------------------------------ loaders
    def splits(self) -> list[str]:
        return list(self.examples)

    def require(self, split: str) -> list[dict[str, Any]]:
        self.prepare()
        if split not in self.examples:
            raise DomainTuneError(
                f"The data has no '{split}' split (it has {self.splits()}).",
                f"Provide a {split} file, or evaluate another split with eval.split=...",
            )
        return self.examples[split]

    @property
    def collate(self) -> Any:
        """Evaluation batches: the examples (for preference data, the chosen answers)."""
        return functools.partial(pad_collate, pad_id=self.tokenizer.pad_token_id)

    @property
    def train_collate(self) -> Any:
        """Training and validation batches: preference pairs or label rows when the objective needs them."""
        return self._collate(self.pairs, self.choices)

    def _collate(self, pairs: bool, choices: bool) -> Any:
        """Preference pairs, label rows or plain examples, padded with the tokenizer's pad id."""
        collate = pair_collate if pairs else choice_collate if choices else pad_collate
        return functools.partial(collate, pad_id=self.tokenizer.pad_token_id)

    def batching(self) -> dict[str, Any]:
        """How training batches are formed, decided once from the padding efficiency of each way.

        `packing: auto` packs when that raises the share of real tokens per processed token by at least
        `packing_min_gain` over unpacked batches (length-grouped when `group_by_length`). Packed rows are
        full `max_length` rows, so attention costs more per token than in short rows: a small gain in
        efficiency does not pay (scripts/benchmark.py measures both).
        """
        if self._batching is None:
            eff = self.padding_efficiency()
            unpacked = eff["grouped" if self.group_by_length else "shuffled"]
            wanted = self.packing
            if self.pairs or self.choices:
                pack_it = False
                why = (
                    "objective=choice batches a prompt and every label's answer per row"
                    if self.choices
                    else "preference pairs are batched as chosen + rejected rows"
                )
            elif wanted == "auto":
                gain = eff["packed"] - unpacked
                pack_it = self.packing_allowed and gain >= self.packing_min_gain
                why = (
                    "the adapter prepends virtual tokens"
                    if not self.packing_allowed
                    else f"packing changes the padding efficiency by {gain:+.3f} (threshold {self.packing_min_gain})"
                )
            else:
                pack_it, why = bool(wanted), f"data.packing={str(wanted).lower()}"
            used = "packed" if pack_it else "grouped" if self.group_by_length else "shuffled"
            mode = "grouped by length" if used == "grouped" else used
            self._batching = {"mode": mode, "packed": pack_it, "reason": why, "efficiency": eff[used]}
            log.info(f"Training batches: {mode} ({why}); padding efficiency {self._batching['efficiency']:.3f}")
        return self._batching

    def train_rows(self) -> list[dict[str, Any]]:
        """Training rows: the examples, or packed rows of several examples when packing is chosen."""
        examples = self.require("train")
        if self.batching()["packed"]:
            return pack(examples, self.renderer.max_length, self.seed)
        return examples

    def train_dataloader(self) -> StatefulDataLoader:
        # Stateful: Lightning stores its position in checkpoints, so a resumed run continues mid-epoch
        # with the same shuffled order instead of replaying the epoch from the start. The order depends
        # on the seed alone, not on whatever else drew from the global RNG before training.
        rows = self.train_rows()
        size = self.batch_size
        # our batch sampler splits batches between data-parallel processes itself (trainer config sets
        # use_distributed_sampler: false, so Lightning does not try to wrap it)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        place = {"rank": torch.distributed.get_rank(), "world_size": torch.distributed.get_world_size()} if dist else {}
        if self.batching()["mode"] == "grouped by length":
            # Fixed buckets of similar length, formed once by seed; each epoch shuffles whole buckets, so
            # batches pad little and their order is still random.
            batches = EpochBatches(self.seed, buckets=group_by_length(rows, size, self.seed), **place)
        else:
            batches = EpochBatches(self.seed, rows=len(rows), batch_size=size, **place)
        return StatefulDataLoader(rows, batch_sampler=batches, collate_fn=self.train_collate, num_workers=self.num_workers)

    def eval_dataloader(
        self, split: str, max_samples: int | None = None, pairs: bool = False, choices: bool = False
    ) -> DataLoader:
        """A split's first `max_samples` examples in order: as preference pairs (`pairs`), as label rows
        (`choices`, objective=choice's validation) or as plain examples."""
        items = self.require(split)
        items = items[:max_samples] if max_samples else items
        return DataLoader(
            items,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self._collate(pairs, choices),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("validation", self.val_max_samples, pairs=self.pairs, choices=self.choices)

    # ------------------------------------------------------------------ reporting
    def token_lengths(self, split: str) -> list[int]:
        return [len(e["input_ids"]) for e in self.examples.get(split, [])]

    def padding_efficiency(self) -> dict[str, float]:
        """Real tokens / processed tokens of training batches: shuffled, grouped by length, and packed
        (computed once: the batching decision and the report both read it)."""
        if self._efficiency is None:
            self._efficiency = self._measure_padding()
        return self._efficiency

    def _measure_padding(self) -> dict[str, float]:
        examples = self.require("train")
        size = self.batch_size
        shuffled = list(examples)
        random.Random(self.seed).shuffle(shuffled)
        packed = pack(examples, self.renderer.max_length, self.seed)
        random.Random(self.seed).shuffle(packed)
        grouped = [examples[i] for b in group_by_length(examples, size, self.seed) for i in b]
        return {
            "shuffled": padding_efficiency(shuffled, size),
            "grouped": padding_efficiency(grouped, size),
            "packed": padding_efficiency(packed, size),
            "rows_unpacked": len(examples),
            "rows_packed": len(packed),
        }

    def report(self) -> dict[str, Any]:
        out = self.audit.to_dict()
        out["from_cache"] = str(self.from_cache) if self.from_cache else None
        out["tokens"] = {}
        for split in self.examples:
            lengths = sorted(self.token_lengths(split))
            trained = sum(sum(1 for t in e["labels"] if t != IGNORE) for e in self.examples[split])
            out["tokens"][split] = {
                "examples": len(lengths),
                "total": sum(lengths),
                "trained": trained,
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
                "max": lengths[-1],
            }
        # label counts per split of label tasks (fact checking; preference pairs over a label set count their chosen
        # label): the refinement report flags imbalance
        out["labels"] = {
            split: dict(Counter(self.task_of(r).references(r)[0] for r in recs if self.task_of(r).labels))
            for split, recs in self.records.items()
            if any(self.task_of(r).labels for r in recs)
        }
        if "train" in self.examples:
            out["padding_efficiency"] = self.padding_efficiency()
            out["batching"] = self.batching()
        return out

    def write_report(self, folder: str | Path, show: bool = True) -> dict[str, Any]:
        """Write data_report.json and token_lengths.png into folder (and print the audit); returns the report."""
        report = self.report()
        folder = Path(folder)
        (folder / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        plot_lengths({s: self.token_lengths(s) for s in self.examples}, folder / "token_lengths.png", self.renderer.max_length)
        if show:
            print_audit(report)
        return report


# The DataModule's own arguments (how batches are served): a mixture component's values of these are not used.
SERVING_ARGUMENTS = frozenset(inspect.signature(DomainDataModule.__init__).parameters) - {"self", "tokenizer", "recipe"}
