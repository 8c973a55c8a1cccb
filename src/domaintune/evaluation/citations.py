"""Citation precision, recall and F1 of fact-checks that cite their evidence (task type cited_fact_check).

An answer cites sentences as bracketed numbers after its verdict ("false [2, 5]", or "[2][5]"); every bracket
of whole numbers in the answer counts. The gold citations are read from the rendered reference answer with the
same parser, so they are numbered exactly as the response template numbers them (no second copy of the
numbering in code). Per answer: precision = cited gold sentences / cited sentences, recall = cited gold
sentences / gold sentences, F1 their harmonic mean (0 when nothing right is cited); an answer with no bracketed
numbers cites nothing parseable: it scores 0 on all three and is counted in `citation_unparseable_rate`. The
reported values are means over answers (on the 0-100 scale), so the paired bootstrap resamples answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from domaintune.data.formats import CitedAnswer
from domaintune.evaluation.evidence import Evidence
from domaintune.utils.errors import DomainTuneError

_BRACKETS = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


def parse_citations(text: str) -> set[int] | None:
    """The sentence numbers an answer cites, or None when it has no bracketed list of numbers."""
    groups = _BRACKETS.findall(text)
    if not groups:
        return None
    return {int(n) for g in groups for n in g.split(",")}


def citation_scores(cited: set[int] | None, gold: set[int]) -> tuple[float, float, float]:
    """(precision, recall, F1) of one answer's citations, each 0..1."""
    if not cited:
        return 0.0, 0.0, 0.0
    right = len(cited & gold)
    precision, recall = right / len(cited), right / len(gold)
    return precision, recall, (2 * precision * recall / (precision + recall) if right else 0.0)


def citation(
    ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], golds: Sequence[object] = (), **_: object
) -> dict[str, Evidence]:
    """The `citation` metric family: gen/citation_precision, _recall, _f1 and _unparseable_rate."""
    if len(golds) != len(preds) or not all(isinstance(g, CitedAnswer) for g in golds):
        raise ValueError("the citation metric scores cited_fact_check answers (data.task.type: cited_fact_check)")
    rows: dict[str, list[float]] = {"precision": [], "recall": [], "f1": [], "unparseable_rate": []}
    for pred, gold in zip(preds, golds, strict=True):
        assert isinstance(gold, CitedAnswer)
        wanted = parse_citations(gold.reference)
        if not wanted:
            raise DomainTuneError(
                f"The reference answer {gold.reference!r} cites no sentence in brackets, so its citations cannot be scored.",
                "Write the citations in data.task.response as bracketed numbers after the label, e.g. "
                "'{{ label }} [{% for i in citations %}{{ i + 1 }}{% if not loop.last %}, {% endif %}{% endfor %}]'.",
            )
        cited = parse_citations(pred)
        for name, value in zip(("precision", "recall", "f1"), citation_scores(cited, wanted), strict=True):
            rows[name].append(100.0 * value)
        rows["unparseable_rate"].append(100.0 * (cited is None))
    return {f"citation_{k}": Evidence("mean", list(ids), v) for k, v in rows.items()}
