"""Where records come from: local files (JSONL, JSON, CSV, Parquet), a `datasets` directory, or a hub id.

All sources return `{split: [record, ...]}` with each record's origin in `_src` ("file:line"), so every
later error or audit entry can point at the exact line. JSON/JSONL are read here line by line (the
`datasets` JSON loader cannot report the failing line or skip-and-count bad ones); everything else goes
through `datasets`, which is also the code path for hub ids.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.data.recipe import DataRecipe
from domaintune.utils.errors import DomainTuneError, choices
from domaintune.utils.logging import get_logger

log = get_logger(__name__)

Record = dict[str, Any]
SPLITS = ("train", "validation", "test")
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class ReadStats:
    """Lines a reader could not use (only with data.on_error=skip); reported in the audit."""

    def __init__(self) -> None:
        self.skipped: dict[str, dict[str, int]] = {}
        self.examples: list[str] = []

    def skip(self, split: str, reason: str, where: str) -> None:
        self.skipped.setdefault(split, {}).setdefault(reason, 0)
        self.skipped[split][reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")


def origin_of(src: str) -> str:
    """The file (or dataset) part of a record's `_src`, without its line or row number."""
    return re.sub(r"(:\d+|#\d+)$", "", src)


def _bad_line(path: Path, lineno: int, raw: bytes, what: str, fix: str) -> DomainTuneError:
    start = raw[:80].decode("utf-8", errors="replace").rstrip()
    return DomainTuneError(f"{path}:{lineno}: {what}. The line starts with: {start!r}.", fix)


_SKIP_HINT = "or set data.on_error=skip to skip such lines (they are counted in the data report)."


class _LineProblem(ValueError):
    def __init__(self, reason: str, what: str, fix: str):
        super().__init__(what)
        self.reason, self.what, self.fix = reason, what, fix


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice would silently keep only its last value."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _LineProblem("duplicate_key", f"the key '{key}' appears twice in one object", "Keep one value per key")
        seen[key] = value
    return seen


def _parse_line(raw: bytes, first: bool = False) -> dict[str, Any]:
    """One JSONL line -> an object, or a _LineProblem naming what is wrong and the fix. A UTF-8 byte-order
    mark on the first line (Windows editors write one) is not part of the data and is dropped."""
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _LineProblem(
            "not_utf8",
            f"the line is not valid UTF-8 ({exc.reason} at byte {exc.start})",
            "Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise _LineProblem(
            "malformed_json", f"malformed JSON ({exc.msg} at column {exc.colno})", "Fix the line so it is one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise _LineProblem(
            "not_an_object",
            f"each line must be a JSON object, got a {type(obj).__name__}",
            'Write one {"field": ...} object per line',
        )
    return obj


def read_jsonl(path: Path, split: str, on_error: str, stats: ReadStats, hint: str = _SKIP_HINT) -> list[Record]:
    """JSONL -> records tagged with `_src` (file:line); a bad line raises (naming file, line and fix) or is
    skipped and counted in `stats`. `hint` ends the error's fix (the data pipeline offers data.on_error)."""
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = _parse_line(raw, first=lineno == 1)
            except _LineProblem as problem:
                if on_error == "skip":
                    stats.skip(split, problem.reason, f"{path}:{lineno}")
                    continue
                raise _bad_line(path, lineno, raw, problem.what, f"{problem.fix}, {hint}") from None
            obj["_src"] = f"{path}:{lineno}"
            records.append(obj)
    return records


def read_json(path: Path) -> list[Record]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DomainTuneError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}).", "Re-save it as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise DomainTuneError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}).", "Fix the file."
        ) from None
    if isinstance(obj, dict):  # {"data": [...]} and similar wrappers with exactly one list inside
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = lists[0] if len(lists) == 1 else obj
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise DomainTuneError(
            f"{path} must hold a JSON list of objects.", 'Use a list like [{"question": ..., "answer": ...}] or JSONL.'
        )
    return [{**r, "_src": f"{path}#{i}"} for i, r in enumerate(obj)]


def _rows_from_datasets(ds: Any, origin: str) -> list[Record]:
    return [{**row, "_src": f"{origin}#{i}"} for i, row in enumerate(ds)]


def read_file(path: Path, split: str, on_error: str, stats: ReadStats) -> list[Record]:
    """Read one data file by its extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DomainTuneError(f"Cannot read '{path}': unknown file type '{path.suffix}'.", f"Use one of {choices(FORMATS)}.")
    if not path.is_file():
        raise DomainTuneError(f"The data file '{path}' does not exist.", "Check data.dir / data.files (or paths.data_dir).")
    if fmt == "jsonl":
        records = read_jsonl(path, split, on_error, stats)
    elif fmt == "json":
        records = read_json(path)
    else:
        import datasets

        try:
            ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
        except Exception as exc:  # datasets raises many types; all mean "this file cannot be read"
            raise DomainTuneError(
                f"Could not read {fmt.upper()} file '{path}': {type(exc).__name__}: {exc}.",
                "Check that the file is valid and UTF-8 encoded.",
            ) from exc
        records = _rows_from_datasets(ds, str(path))
    if not records:
        raise DomainTuneError(f"The data file '{path}' holds no records.", "Fill it, or point data.dir / data.files elsewhere.")
    return records


def _split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split in SPLITS:
        candidates = [folder / f"{split}{ext}" for ext in FORMATS if (folder / f"{split}{ext}").is_file()]
        if len(candidates) > 1:
            raise DomainTuneError(f"{folder} has several files for split '{split}': {[c.name for c in candidates]}.", "Keep one.")
        if candidates:
            found[split] = candidates[0]
    return found


def _from_datasets_object(obj: Any, origin: str, split_names: dict[str, str]) -> dict[str, list[Record]]:
    import datasets

    if isinstance(obj, datasets.Dataset):
        return {"train": _rows_from_datasets(obj, origin)}
    out = {}
    for split in SPLITS:
        name = split_names.get(split, split)
        if name in obj:
            out[split] = _rows_from_datasets(obj[name], f"{origin}[{name}]")
    if not out:
        raise DomainTuneError(
            f"{origin} has splits {choices(obj.keys())} but none named {choices(split_names.values())}.",
            "Map them with data.split_names, e.g. data.split_names.validation=dev.",
        )
    return out


def split_by_ratio(records: list[Record], ratios: dict[str, float], seed: int) -> dict[str, list[Record]]:
    """Deterministic split of one record list (shuffled by seed) into the configured ratios."""
    total = sum(ratios.values())
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    out, start = {}, 0
    names = [s for s in SPLITS if ratios.get(s)]
    for i, split in enumerate(names):
        end = len(order) if i == len(names) - 1 else start + round(len(order) * ratios[split] / total)
        out[split] = [records[j] for j in sorted(order[start:end])]
        start = end
    return out


@dataclass
class Source:
    """Where a data config's records come from, resolved but not yet read."""

    kind: str  # hub | files | saved
    hub: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    folder: Path | None = None

    def fingerprint(self, extra: str = "") -> str:
        """A hash of everything this source would read: file bytes locally, id and revision on the hub."""
        h = hashlib.sha256(f"{self.kind}|{self.hub}|{extra}".encode())
        paths = sorted(self.folder.rglob("*")) if self.folder else [self.files[s] for s in sorted(self.files)]
        for path in paths:
            if path.is_file():
                h.update(f"{path.name}|{path.stat().st_size}|".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def locate(recipe: DataRecipe) -> Source:
    """Resolve data.hub / data.files / data.dir to a Source, with clear errors for missing paths."""
    if recipe.hub:
        return Source("hub", hub=str(recipe.hub))
    if recipe.files:
        files = recipe.files
        mapping = {"train": files} if isinstance(files, str) else {s: p for s, p in files.items() if p}
        return Source("files", files={s: Path(str(p)) for s, p in mapping.items()})
    folder = Path(str(recipe.dir))
    if not folder.is_dir():
        raise DomainTuneError(
            f"The data directory '{folder}' does not exist (resolved to '{folder.resolve()}').",
            "Set data.dir to a folder with train/validation/test files, paths.data_dir to a root holding "
            "'<domain>/' folders, or data.files / data.hub.",
        )
    if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        return Source("saved", folder=folder)
    files = _split_files(folder)
    if not files:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise DomainTuneError(
            f"The data directory '{folder}' has no split files ({', '.join(f'{s}.jsonl' for s in SPLITS)} or "
            f".json/.csv/.parquet). It contains: {present}.",
            "Name the files by split, or list them with data.files.train=... data.files.validation=...",
        )
    return Source("files", files=files)


def load_records(recipe: DataRecipe, stats: ReadStats) -> dict[str, list[Record]]:
    """Load every available split of the configured source."""
    on_error = recipe.on_error
    if on_error not in ("raise", "skip"):
        raise DomainTuneError(f"data.on_error={on_error!r} is not valid.", "Use raise or skip.")
    split_names = {**{s: s for s in SPLITS}, **recipe.split_names}
    source = locate(recipe)
    if source.kind == "hub":
        import datasets

        try:
            obj = datasets.load_dataset(source.hub, name=recipe.hub_config, revision=recipe.revision)
        except Exception as exc:
            raise DomainTuneError(
                f"Could not load the dataset '{source.hub}' from the Hugging Face Hub: {type(exc).__name__}: {exc}.",
                "Without network, download it elsewhere, save it with `save_to_disk` or as JSONL, and point data.dir at it.",
            ) from exc
        splits = _from_datasets_object(obj, source.hub, split_names)
    elif source.kind == "saved":
        import datasets

        splits = _from_datasets_object(datasets.load_from_disk(str(source.folder)), str(source.folder), split_names)
    else:
        splits = {s: read_file(p, s, on_error, stats) for s, p in source.files.items()}
    if set(splits) == {"train"}:
        ratios = recipe.split_ratios
        log.info(f"Only a train split was given: splitting it {ratios} with seed {recipe.seed}")
        splits = split_by_ratio(splits["train"], ratios, recipe.seed)
    return splits
