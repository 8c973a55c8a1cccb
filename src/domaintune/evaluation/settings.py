"""The evaluation's nested config blocks as typed dataclasses (`eval.bootstrap`, `eval.selection`,
`eval.generation`, `eval.calibration`, `eval.memorisation`), each checking its own values in `__post_init__`.

Why not plain dicts: a dict lets a misspelt key through and scatters the checks of its values over the code
that reads them; here a block is built once (by `domaintune.utils.config.settings`, which refuses unknown
and missing keys) and read as attributes. `checks.check_evaluation` builds them before anything loads, so a
bad value still fails in a second, not after training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from domaintune.evaluation.evidence import Evidence, Interval, interval_of, paired_intervals
from domaintune.utils.config import count_below
from domaintune.utils.errors import DomainTuneError


@dataclass(frozen=True)
class Bootstrap:
    """`eval.bootstrap`: the paired bootstrap behind every interval (evaluation/evidence.py)."""

    resamples: int
    confidence: float
    seed: int
    # an interval that cannot decide and is wider than this fraction of the metric's value gets a warning
    warn_relative_width: float

    def __post_init__(self) -> None:
        if not 0 < float(self.confidence) < 1:
            raise DomainTuneError(
                f"eval.bootstrap.confidence={self.confidence} is not a probability.",
                "Use e.g. eval.bootstrap.confidence=0.95.",
            )
        if int(self.resamples) < 100:
            raise DomainTuneError(
                f"eval.bootstrap.resamples={self.resamples}: fewer than 100 resamples cannot place a 95% interval's ends.",
                "Use eval.bootstrap.resamples=1000 (the default) or more.",
            )
        if not float(self.warn_relative_width) > 0:
            raise DomainTuneError(
                f"eval.bootstrap.warn_relative_width={self.warn_relative_width} must be positive.",
                "Use e.g. eval.bootstrap.warn_relative_width=0.5.",
            )

    def paired(self, base: dict[str, dict[str, Any]], tuned: dict[str, dict[str, Any]]) -> dict[str, Interval]:
        """Paired intervals on `tuned - base` for every metric both carry evidence for (the one place that
        reads these settings for a comparison: the report, the forgetting check and run-vs-run compare)."""
        return paired_intervals(base, tuned, int(self.resamples), float(self.confidence), int(self.seed))

    def single(self, evidence: Evidence, name: str) -> Interval:
        """An interval on one model's metric itself (e.g. an accuracy against a trivial baseline)."""
        return interval_of(evidence, int(self.resamples), float(self.confidence), int(self.seed), name)

    def describe(self) -> str:
        return f"paired bootstrap, {self.resamples} resamples, {100 * float(self.confidence):g}%"


@dataclass(frozen=True)
class Selection:
    """`eval.selection`: which validation metric picks the best weights, and in which direction."""

    monitor: str
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise DomainTuneError(f"eval.selection.mode={self.mode!r} is not an option.", "Use min or max.")


@dataclass(frozen=True)
class Calibration:
    """`eval.calibration`: label tasks' likelihood scores recalibrated by one offset per label, fitted on a
    labelled split (evaluation/choice.py `fit_offsets`); reported as choice/calibrated/* beside choice/*."""

    # the split the offsets are fitted on (null: no calibration)
    split: str | None
    # where the scored split is the fitted one: each fold is scored with offsets fitted on the others
    folds: int

    def __post_init__(self) -> None:
        if self.split is not None and not isinstance(self.split, str):
            raise DomainTuneError(
                f"eval.calibration.split={self.split!r} is not one split's name.",
                "Use eval.calibration.split=validation, or null for no calibration.",
            )
        if count_below(self.folds, 2):
            raise DomainTuneError(
                f"eval.calibration.folds={self.folds!r} must be a whole number of at least 2.",
                "Use e.g. eval.calibration.folds=5.",
            )


@dataclass(frozen=True)
class Generation:
    """`eval.generation` (conf/eval/default.yaml documents each key)."""

    max_samples: int | None
    num_samples: int
    # a number, or `auto` until the Evaluator resolves it from the training answers (`answer_limit`)
    max_new_tokens: int | str
    auto_percentile: float
    auto_cap: int
    batch_size: int
    do_sample: bool
    repetition_penalty: float
    sort_by_length: bool
    temperature: float
    top_p: float
    every_n_epochs: int | None

    def __post_init__(self) -> None:
        limit = self.max_new_tokens
        if limit != "auto" and count_below(limit, 1):
            raise DomainTuneError(
                f"eval.generation.max_new_tokens={limit!r} is neither `auto` nor a positive number of tokens.",
                "Use eval.generation.max_new_tokens=auto (from the training answers' lengths) or e.g. 256.",
            )
        if not 0 < float(self.auto_percentile) <= 100:
            raise DomainTuneError(f"eval.generation.auto_percentile={self.auto_percentile} is not a percentile.", "Use e.g. 95.")
        for key in ("auto_cap", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise DomainTuneError(f"eval.generation.{key}={getattr(self, key)} must be at least 1.", "E.g. 64.")
        for key in ("max_samples", "num_samples"):
            value = getattr(self, key)
            if value is not None and int(value) < 0:
                raise DomainTuneError(
                    f"eval.generation.{key}={value} is negative.", "Use 0 to switch it off, or a count (max_samples: null = all)."
                )
        if self.every_n_epochs is not None and int(self.every_n_epochs) < 1:
            raise DomainTuneError(
                f"eval.generation.every_n_epochs={self.every_n_epochs} must be at least 1.",
                "Use null (only before and after training) or e.g. 1.",
            )
        if float(self.repetition_penalty) <= 0:
            raise DomainTuneError(
                f"eval.generation.repetition_penalty={self.repetition_penalty} must be positive.", "Use 1.0 for off."
            )
        if self.do_sample and not (float(self.temperature) > 0 and 0 < float(self.top_p) <= 1):
            raise DomainTuneError(
                f"eval.generation samples with temperature={self.temperature}, top_p={self.top_p}: the temperature must "
                "be positive and top_p in (0, 1].",
                "E.g. eval.generation.temperature=0.7 eval.generation.top_p=0.9, or do_sample=false.",
            )

    def options(self) -> dict[str, Any]:
        """The block as the dict `generation.generate` takes (shared with chat, generate and the server)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Memorisation:
    """`eval.memorisation` (conf/eval/default.yaml documents each key)."""

    max_samples: int
    min_tokens: int
    seed: int

    def __post_init__(self) -> None:
        if count_below(self.max_samples, 0):
            raise DomainTuneError(
                f"eval.memorisation.max_samples={self.max_samples!r} is not a count of training examples.",
                "Use 0 to switch the check off, or e.g. 32.",
            )
        if count_below(self.min_tokens, 1):
            raise DomainTuneError(
                f"eval.memorisation.min_tokens={self.min_tokens!r} is not a positive number of tokens.",
                "E.g. 32: an answer reproducing 32 consecutive tokens of its training answer counts as memorised.",
            )
