"""The LightningDataModule: load -> preprocess (+audit) -> render + tokenise (+mask) -> batches."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from domaintune.data.chat import ChatRenderer
from domaintune.data.collate import pad_collate
from domaintune.data.formats import Task
from domaintune.data.preprocess import Audit, Preprocessor, StepReport
from domaintune.data.sources import ReadStats, load_records, origin_of
from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError
from domaintune.utils.logging import get_logger

log = get_logger(__name__)


class ListDataset:
    """A map-style dataset over already tokenised examples."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class DomainDataModule(pl.LightningDataModule):
    """Supervised fine-tuning data for one domain config.

    `records[split]` (canonical fields) and `examples[split]` (token ids + labels) stay aligned, so
    evaluation can generate from a record's prompt and compare with its reference.
    """

    def __init__(self, cfg: DictConfig | dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int = 0):
        super().__init__()
        self.cfg = to_dict(cfg)
        self.tokenizer = tokenizer
        self.seed = seed
        self.task = Task(self.cfg.get("task") or {})
        self.renderer = ChatRenderer(tokenizer, int(self.cfg.get("max_length", 512)))
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.audit = Audit()

    # ------------------------------------------------------------------ building
    def prepare(self) -> None:
        """Build every split once (idempotent; Lightning's setup() calls it too)."""
        if self.examples:
            return
        stats = ReadStats()
        raw = load_records(self.cfg, self.seed, stats)
        for split, records in raw.items():
            skipped = stats.skipped.get(split, {})
            n_read = len(records) + sum(skipped.values())
            self.audit.add(
                split,
                StepReport(
                    "read", n_read, len(records), removed=dict(skipped), examples=[{"record": e} for e in stats.examples][:3]
                ),
            )
            self.task.check_columns({k for r in records for k in r if not k.startswith("_")}, origin_of(records[0]["_src"]))
            cap = self.cfg.get("max_samples")
            if cap is not None and len(records) > int(cap):
                self.audit.add(
                    split,
                    StepReport("max_samples", len(records), int(cap), removed={"over_max_samples": len(records) - int(cap)}),
                )
                raw[split] = records[: int(cap)]
        pre = Preprocessor(self.cfg.get("preprocess") or {}, self.task)
        clean = pre.run(raw, self.audit, on_error=self.cfg.get("on_error", "raise"))
        for split, records in clean.items():
            self.records[split], self.examples[split] = self._tokenize(split, records)
        self.audit.check()

    def _tokenize(self, split: str, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self.task.type == "text":
            encoded = self.renderer.encode_texts([self.task.text(r) for r in records])
        else:
            encoded = self.renderer.encode_many([self.task.conversation(r) for r in records], self.task.train_on)
        too_long = (self.cfg.get("preprocess") or {}).get("too_long", "truncate")
        report = StepReport("tokenize", len(records), 0)
        kept_records, kept = [], []
        for rec, enc in zip(records, encoded, strict=True):
            reason = None
            if enc.truncated and too_long == "drop":
                reason = "too_long"
            elif enc.n_trained == 0:
                reason = "no_trainable_tokens"  # the prompt alone fills max_length
            if reason:
                report.removed[reason] = report.removed.get(reason, 0) + 1
                if len(report.examples) < 3:
                    report.examples.append({"record": rec["_src"], "removed": reason})
                continue
            if enc.truncated:
                report.changed += 1
            kept_records.append(rec)
            kept.append({"input_ids": enc.input_ids, "labels": enc.labels})
        report.records_out = len(kept)
        self.audit.add(split, report)
        if not kept:
            raise DomainTuneError(
                f"No {split} example has answer tokens left within data.max_length={self.renderer.max_length}.",
                "Raise data.max_length or shorten the prompts.",
            )
        return kept_records, kept

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
        return functools.partial(pad_collate, pad_id=self.tokenizer.pad_token_id)

    def train_dataloader(self) -> StatefulDataLoader:
        # Stateful: Lightning stores its position in checkpoints, so a resumed run continues mid-epoch
        # with the same shuffled order instead of replaying the epoch from the start.
        return StatefulDataLoader(
            ListDataset(self.require("train")),
            batch_size=int(self.cfg.get("batch_size", 8)),
            shuffle=True,
            collate_fn=self.collate,
            num_workers=int(self.cfg.get("num_workers", 0)),
        )

    def eval_dataloader(self, split: str, max_samples: int | None = None) -> DataLoader:
        items = self.require(split)
        items = items[:max_samples] if max_samples else items
        return DataLoader(
            ListDataset(items),
            batch_size=int(self.cfg.get("eval_batch_size", 8)),
            shuffle=False,
            collate_fn=self.collate,
            num_workers=int(self.cfg.get("num_workers", 0)),
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("validation", self.cfg.get("val_max_samples"))

    # ------------------------------------------------------------------ reporting
    def token_lengths(self, split: str) -> list[int]:
        return [len(e["input_ids"]) for e in self.examples.get(split, [])]

    def report(self) -> dict[str, Any]:
        out = self.audit.to_dict()
        out["tokens"] = {}
        for split in self.examples:
            lengths = sorted(self.token_lengths(split))
            trained = sum(sum(1 for t in e["labels"] if t != -100) for e in self.examples[split])
            out["tokens"][split] = {
                "examples": len(lengths),
                "total": sum(lengths),
                "trained": trained,
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
                "max": lengths[-1],
            }
        return out

    def write_report(self, folder: str | Path) -> Path:
        path = Path(folder) / "data_report.json"
        path.write_text(json.dumps(self.report(), indent=2, ensure_ascii=False))
        return path
