"""Preprocessing steps: each takes the records of one split and returns the ones it keeps, accounting for
every removed or changed record in the `Audit` (data/audit_report.py)."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from typing import Any

import ftfy

from domaintune.data.audit_report import Audit, StepReport
from domaintune.data.formats import RecordProblem, Task
from domaintune.data.settings import Dedup, Pii
from domaintune.utils.config import settings
from domaintune.utils.errors import DomainTuneError, unknown_option

Record = dict[str, Any]


def run_step(
    audit: Audit,
    split: str,
    step: str,
    records: list[Record],
    fn: Callable[[Record], Record],
    track_changes: bool = True,
) -> list[Record]:
    """Apply a per-record step. `fn` returns the (possibly new) record, or raises RecordProblem to drop it.

    With `track_changes`, records that come back different are counted as changed (with examples).
    """
    report = StepReport(step, len(records), 0)
    kept = []
    for rec in records:
        try:
            new = fn(rec)
        except RecordProblem as problem:
            report.remove(rec.get("_src", "?"), problem.reason, f"{problem.reason}: {problem}")
            continue
        if track_changes and new is not rec and _visible(new) != _visible(rec):
            report.change(rec.get("_src", "?"), _diff(rec, new))
        kept.append(new)
    report.records_out = len(kept)
    audit.add(split, report)
    return kept


def _visible(rec: Record) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _diff(old: Record, new: Record, before: int = 30, after: int = 50) -> str:
    """The first changed field, shown around the first character that differs."""
    for key in new:
        if not key.startswith("_") and old.get(key) != new.get(key):
            a, b = str(old.get(key)), str(new.get(key))
            i = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            start = max(0, i - before)
            return f"{key}: ...{a[start : i + after]!r} -> ...{b[start : i + after]!r}"
    return ""


# ---------------------------------------------------------------------------------------------- cleaning
# Only real HTML tag names are stripped: a generic `<...>` pattern or an HTML parser would also eat text
# such as "<N layers" in scientific abstracts, so this small whitelist is written by hand on purpose.
_BREAK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6]|hr)\s*/?\s*>", re.IGNORECASE)
_HTML_TAGS = re.compile(
    r"</?\s*(?:a|abbr|b|big|blockquote|br|center|code|div|em|font|h[1-6]|hr|i|img|li|ol|p|pre|small|span|strong|"
    r"sub|sup|table|tbody|td|th|thead|tr|u|ul)(?:\s[^<>]*)?/?\s*>",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str, unicode: bool, html_markup: bool, whitespace: bool) -> str:
    if unicode:
        text = ftfy.fix_text(text, unescape_html=False)
    if html_markup:
        text = _HTML_TAGS.sub(" ", _BREAK_TAGS.sub("\n", text))
        text = html.unescape(text)
    if whitespace:
        lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        text = _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    return text


def _map_text(rec: Record, names: list[str], fn: Callable[[str], str]) -> Record:
    """Apply fn to every text a record carries in `names` (strings, lists of strings, dicts, messages)."""
    out = dict(rec)
    for name in names:
        value = rec.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
        elif isinstance(value, dict):
            out[name] = {k: fn(v) for k, v in value.items()}
        elif isinstance(value, list):
            out[name] = [{**m, "content": fn(m["content"])} if isinstance(m, dict) else fn(m) for m in value]
    return out


def _all_text_fields(task: Task) -> list[str]:
    """The fields whose text is cleaned and scrubbed: all but the label and sentence positions."""
    return [n for n in task.fields if n != "label" and n not in task.spec.index_fields]


def _check_not_empty(task: Task) -> Callable[[Record], Record]:
    def check(rec: Record) -> Record:
        for name in task.spec.required:
            value = rec.get(name)
            if value in (None, "", [], {}) or (isinstance(value, dict) and not any(value.values())):
                raise RecordProblem(f"empty_{name}", f"'{name}' is empty after cleaning")
            if name == "messages" and any(not m["content"].strip() for m in value if m["role"] == "assistant"):
                raise RecordProblem("empty_messages", "an assistant turn is empty after cleaning")
        return rec

    return check


# ---------------------------------------------------------------------------------------------- dedup
def dedup_key(rec: Record, digested: tuple[str, ...] = ()) -> str:
    """What makes two records the same example: all their visible fields, case- and space-folded. Fields in
    `digested` (a shared context: a report, an abstract) count as one word, their digest: records about the same
    context are told apart by their questions, and records about different contexts stay different."""
    parts = []
    for k in sorted(rec):
        if k.startswith("_") or k == "references":
            continue
        v = rec[k] if isinstance(rec[k], str) else repr(rec[k])
        parts.append(f"{k}={hashlib.sha256(v.encode()).hexdigest()[:16] if k in digested else v}")
    return " ".join("\n".join(parts).lower().split())


def _exact_dedup(audit: Audit, split: str, records: list[Record], digested: tuple[str, ...]) -> list[Record]:
    first: dict[str, str] = {}

    def check(rec: Record) -> Record:
        key = dedup_key(rec, digested)
        if key in first:
            raise RecordProblem("exact_duplicate", f"identical to {first[key]}")
        first[key] = rec.get("_src", "?")
        return rec

    return run_step(audit, split, "dedup_exact", records, check)


class NearDuplicates:
    """MinHash-LSH index over records' word n-grams (datasketch): finds records with Jaccard >= threshold."""

    def __init__(self, threshold: float, num_perm: int = 128, ngram: int = 3, digested: tuple[str, ...] = ()):
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm, self.ngram, self.digested = num_perm, ngram, digested
        self._n = 0

    def signature(self, rec: Record) -> Any:
        from datasketch import MinHash

        words = dedup_key(rec, self.digested).split()
        grams = {" ".join(words[i : i + self.ngram]) for i in range(max(1, len(words) - self.ngram + 1))}
        mh = MinHash(num_perm=self.num_perm, seed=1)
        mh.update_batch([g.encode("utf-8") for g in grams])
        return mh

    def query(self, mh: Any) -> list[str]:
        return self.lsh.query(mh)

    def add(self, rec: Record, mh: Any) -> None:
        self.lsh.insert(f"{self._n}|{rec.get('_src', '?')}", mh)
        self._n += 1


def _near_dedup(
    audit: Audit, split: str, records: list[Record], cfg: Dedup, digested: tuple[str, ...]
) -> tuple[list[Record], NearDuplicates]:
    index = NearDuplicates(float(cfg.threshold), int(cfg.num_perm), int(cfg.ngram), digested)

    def check(rec: Record) -> Record:
        mh = index.signature(rec)
        hits = index.query(mh)
        if hits:
            raise RecordProblem("near_duplicate", f"near-identical to {hits[0].split('|', 1)[1]}")
        index.add(rec, mh)
        return rec

    return run_step(audit, split, "dedup_near", records, check), index


def _leakage(
    audit: Audit,
    split: str,
    records: list[Record],
    train_keys: dict[str, str],
    train_index: NearDuplicates | None,
    digested: tuple[str, ...],
) -> list[Record]:
    """Drop evaluation records that duplicate (exactly or nearly) a training record."""

    def check(rec: Record) -> Record:
        key = dedup_key(rec, digested)
        if key in train_keys:
            raise RecordProblem("duplicate_of_train", f"identical to train record {train_keys[key]}")
        if train_index is not None and (hits := train_index.query(train_index.signature(rec))):
            raise RecordProblem("near_duplicate_of_train", f"near-identical to train record {hits[0].split('|', 1)[1]}")
        return rec

    return run_step(audit, split, "leakage", records, check)


# ---------------------------------------------------------------------------------------------- pipeline
TOO_LONG = ("truncate", "drop")


class Preprocessor:
    """Runs the configured steps over all splits, in order, recording each in the audit.

    Per split: fields -> clean -> pii -> drop_empty -> dedup_exact -> dedup_near; then, across splits,
    leakage (validation/test records that duplicate a training record). Tokenisation (truncate/drop) is
    the DataModule's last audited step.
    """

    def __init__(
        self,
        task: Task,
        *,
        unicode: bool,
        html: bool,
        whitespace: bool,
        pii: dict[str, Any] | Pii,
        dedup: dict[str, Any] | Dedup,
        leakage: bool,
        too_long: str,
    ):
        """Built by `hydra.utils.instantiate(data.preprocess, task=...)` (one per source: a mixture's components
        each have their own task); the keys are documented in conf/data/_base.yaml."""
        self.task = task
        self.unicode, self.html, self.whitespace = bool(unicode), bool(html), bool(whitespace)
        self.leakage = bool(leakage)
        if too_long not in TOO_LONG:
            raise unknown_option("data.preprocess.too_long", too_long, TOO_LONG, "Use truncate or drop.")
        self.too_long = too_long
        self.scrub = settings(Pii, pii, "data.preprocess.pii").scrubber()
        self.dedup = settings(Dedup, dedup, "data.preprocess.dedup")

    def run(
        self, splits: dict[str, list[Record]], audit: Audit, on_error: str = "raise", prefix: str = ""
    ) -> dict[str, list[Record]]:
        """Preprocess every split; audit entries are named `<prefix><split>` (prefix: a mixture component)."""
        out: dict[str, list[Record]] = {}
        train_index = None
        for split in sorted(splits, key=lambda s: s != "train"):  # train first: leakage checks need it
            out[split], index = self._per_split(prefix + split, splits[split], audit, on_error)
            if split == "train":
                train_index = index
        if self.leakage and "train" in out:
            digested = self.task.spec.context_fields
            train_keys = {dedup_key(r, digested): r.get("_src", "?") for r in out["train"]}
            for split in out:
                if split != "train":
                    out[split] = _leakage(audit, prefix + split, out[split], train_keys, train_index, digested)
        for split, records in out.items():
            if not records:
                raise DomainTuneError(
                    f"The {prefix}{split} split is empty after preprocessing (data_report.json says what removed its records).",
                    "Check data.task.fields and the data files, or relax data.preprocess (dedup, drop steps).",
                )
        return {s: out[s] for s in splits}

    def _per_split(
        self, split: str, records: list[Record], audit: Audit, on_error: str
    ) -> tuple[list[Record], NearDuplicates | None]:
        task = self.task

        def select(rec: Record) -> Record:
            try:
                return task.select(rec)
            except RecordProblem as problem:
                if on_error == "raise" and problem.reason in ("wrong_type", "label_not_in_set", "no_assistant_turn"):
                    first = (
                        "Add the label to data.task.labels if it is a real class, fix"
                        if problem.reason == "label_not_in_set"
                        else "Fix"
                    )
                    raise DomainTuneError(
                        f"Record {rec.get('_src', '?')} cannot be used: {problem}.",
                        f"{first} the record, map the right column with data.task.fields, or set data.on_error=skip "
                        "to skip such records (they are counted in the audit).",
                    ) from None
                raise

        records = run_step(audit, split, "fields", records, select, track_changes=False)
        names = _all_text_fields(task)
        if self.unicode or self.html or self.whitespace:
            clean = lambda text: clean_text(text, self.unicode, self.html, self.whitespace)
            records = run_step(audit, split, "clean", records, lambda r: _map_text(r, names, clean))
        if self.scrub is not None:
            records = run_step(audit, split, "pii", records, lambda r: _map_text(r, names, self.scrub))
        records = run_step(audit, split, "drop_empty", records, _check_not_empty(task))
        if self.dedup.exact:
            records = _exact_dedup(audit, split, records, task.spec.context_fields)
        index = None
        if self.dedup.near:
            records, index = _near_dedup(audit, split, records, self.dedup, task.spec.context_fields)
        return records, index
