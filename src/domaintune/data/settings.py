"""The preprocessing's nested config blocks as typed dataclasses (`data.preprocess.pii`,
`data.preprocess.dedup`), each checking its own values in `__post_init__` (as evaluation/settings.py does for
the evaluation's): built once by `domaintune.utils.config.settings`, read as attributes, and built by
`checks.check_config` before anything loads so a bad value fails at once."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from domaintune.data.pii import TYPES, PiiScrubber
from domaintune.utils.errors import DomainTuneError, unknown_option


@dataclass(frozen=True)
class Pii:
    """`data.preprocess.pii`: which kinds of personal data are replaced, and by what."""

    enabled: bool
    # an empty list: every kind (TYPES)
    types: list[str]
    region: str
    id_min_digits: int
    placeholder: str

    def __post_init__(self) -> None:
        for t in self.types or []:
            if t not in TYPES:
                raise unknown_option("PII type", t, TYPES, "Set data.preprocess.pii.types to a subset of them.")
        if self.region not in phonenumbers.SUPPORTED_REGIONS:
            raise DomainTuneError(
                f"data.preprocess.pii.region={self.region!r} is not a region libphonenumber knows.",
                "Use a two-letter country code such as US, GB or DE.",
            )
        if int(self.id_min_digits) < 2:
            raise DomainTuneError(
                f"data.preprocess.pii.id_min_digits={self.id_min_digits} would replace almost every number.",
                "Use e.g. 9 (runs of at least 9 digits are treated as ID numbers).",
            )
        if "{}" not in self.placeholder:
            raise DomainTuneError(
                f"data.preprocess.pii.placeholder={self.placeholder!r} has no {{}} for the kind's name.",
                'Use e.g. "[{}]" (-> [EMAIL], [PHONE]).',
            )

    def scrubber(self) -> PiiScrubber | None:
        if not self.enabled:
            return None
        return PiiScrubber(self.types or TYPES, self.region, self.placeholder, int(self.id_min_digits))


@dataclass(frozen=True)
class Dedup:
    """`data.preprocess.dedup`: exact and MinHash near-duplicate removal within a split."""

    exact: bool
    near: bool
    # Jaccard similarity of word n-grams above which two records are near-duplicates
    threshold: float
    ngram: int
    num_perm: int

    def __post_init__(self) -> None:
        if not 0 < float(self.threshold) <= 1:
            raise DomainTuneError(
                f"data.preprocess.dedup.threshold={self.threshold} is not a similarity in (0, 1].", "Use e.g. 0.9."
            )
        if int(self.ngram) < 1:
            raise DomainTuneError(f"data.preprocess.dedup.ngram={self.ngram} must be at least 1.", "Use e.g. 3.")
        if int(self.num_perm) < 16:
            raise DomainTuneError(
                f"data.preprocess.dedup.num_perm={self.num_perm}: too few permutations for a usable MinHash estimate.",
                "Use e.g. 128.",
            )
