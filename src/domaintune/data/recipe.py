"""What a data config says the prepared examples are: sources, task, preprocessing, length, sampling.

The DataModule's own constructor arguments say how the examples are *served* (batch sizes, packing,
workers, cache); every other key of a data config lands here. So the cache key and fingerprint hash this
whole recipe and nothing else, without a hand-kept list of which keys matter: a key added to the YAML
either becomes a DataModule argument (serving) or a field below (content), and an unknown key is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from domaintune.utils.config import to_dict
from domaintune.utils.errors import DomainTuneError, choices, unread_keys


@dataclass(frozen=True)
class DataRecipe:
    """One data config's content keys (conf/data/_base.yaml documents each). A mixture's `components` are
    recipes too; `weights` and `size` sample them (conf/data/mixture.yaml)."""

    name: str
    dir: str | None
    files: str | dict[str, str] | None
    hub: str | None
    hub_config: str | None
    revision: str | None
    split_names: dict[str, str]
    split_ratios: dict[str, float]
    on_error: str
    max_samples: int | None
    max_length: int
    seed: int
    task: dict[str, Any]
    preprocess: dict[str, Any]
    # only a mixture sets these (conf/data/mixture.yaml); a single-source config has none
    components: dict[str, DataRecipe] = dataclasses.field(default_factory=dict)
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    size: int | None = None

    @classmethod
    def from_keys(cls, keys: dict[str, Any], where: str = "data", ignore: frozenset[str] = frozenset()) -> DataRecipe:
        """Build from a data config's content keys; `ignore` names keys a caller owns (a component's
        serving keys: the mixture's own top-level values serve its batches)."""
        keys = {k: v for k, v in to_dict(keys).items() if not k.startswith("_") and k not in ignore}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keys) - fields)
        if unknown:
            raise unread_keys(where, unknown, fields | ignore)
        required = [f.name for f in dataclasses.fields(cls) if dataclasses.MISSING is f.default is f.default_factory]
        missing = sorted(set(required) - set(keys))
        if missing:
            raise DomainTuneError(
                f"{where} lacks {choices(missing)}.", "Start the data config with `defaults: [_base]`, which sets every key."
            )
        parts = keys.pop("components", None) or {}
        components = {name: cls.from_keys(part, f"{where}.components.{name}", ignore) for name, part in to_dict(parts).items()}
        return cls(components=components, **keys)

    def sources(self) -> list[DataRecipe]:
        """The recipes that read data: the components of a mixture, else this one."""
        return list(self.components.values()) or [self]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
