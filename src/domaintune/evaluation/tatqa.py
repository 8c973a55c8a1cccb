"""TAT-QA's exact match and F1 for answers read from a report (task type context_qa, `data=finance`).

Written here because TAT-QA's scorer is a script in its repository (github.com/NExTplusplus/TAT-QA,
`tatqa_metric.py` + `tatqa_utils.py`), not a package, and its normalisation is its own: SQuAD's (torchmetrics)
would score differently. What it does, per question, with the answer's scale left out (our data README:
`scale` is not scored):
1. the gold spans and the predicted spans are each sorted; a span that reads as a number becomes
   `'%.4f' % value` (a `%` span keeps its per-cent value, others are rounded to 2 decimals); the spans are
   joined by spaces into one string per side (so several spans are matched as one order-free bag of tokens);
2. a single predicted span that reads as a number is also tried as its plain value (`add_percent_pred`);
3. both strings are normalised token by token (lower case, punctuation dropped unless the token is a number,
   numbers rewritten as their value, articles dropped) and compared: exact match of the normalised strings,
   F1 of the two token sets (rounded to 2 decimals, as TAT-QA does); the best pair counts (exact match first);
4. a `count` (or `arithmetic`) answer is scored by exact match alone (F1 = EM).
Scores are on the 0-100 scale of every other metric. The generated answer is split into spans on the task's
`span_separator` (the separator its training answers were written with). tests/evaluation/test_tatqa.py
checks planted answers against values computed with TAT-QA's own script.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from domaintune.data.formats import SpanAnswer
from domaintune.evaluation.evidence import Evidence

_NOT_IN_NUMBER = set("'\"\\$€£¥%(),[]")
_PUNCTUATION = set(string.punctuation)
_NUMBER = re.compile(r"([+-]?\d+(\.\d+)?)|([+-]?\.\d+)")
_WORD_SCALE = re.compile(r"([\d.]+\s?[a-zA-Z]+)")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# exact match alone decides these answer types (TAT-QA: "if gold type equals arithmetic and count, f1 = em")
EXACT_ONLY = ("count", "arithmetic")


def _scale(word: str) -> int | float:
    """The multiplier a scale word names; an int unless per cent, as TAT-QA's (str() of the value depends on it)."""
    word = word.lower()
    for name, value in (("hundred", 100), ("thousand", 1000), ("million", 1_000_000), ("billion", 1_000_000_000)):
        if name in word:
            return value
    return 0.01 if "percent" in word else 1


def _clean(text: str) -> str:
    return "".join(ch for ch in str(text) if ch not in _NOT_IN_NUMBER)


def is_number(text: str) -> bool:
    """A number, optionally followed by a scale word ("1.5 million"); currency and % signs, commas and
    parentheses ignored."""
    words = " ".join(_clean(w) for w in text.split()).split()
    if not words:
        return False
    try:
        value = float(words[0])
    except ValueError:
        return False
    if value != value:  # NaN
        return False
    return not (len(words) >= 2 and _scale(words[1]) == 1)


def to_number(text: str) -> int | float | None:
    """The value a number span states: its first number, times a scale word after it, negative in
    parentheses, divided by 100 with a % sign. None when the first number starts with a bare point."""
    found = _NUMBER.findall(_clean(text))
    if not found or not found[0][0]:
        return None
    num: int | float = float(found[0][0]) if "." in found[0][0] else int(found[0][0])
    scaled = _WORD_SCALE.search(text)
    scale = _scale(scaled.group(0)) if scaled else 1
    negative = -1 if re.search(r"(\([\d.\s]+\))", text.strip()) else 1
    percent = 0.01 if re.search(r"([\d.\s]+%)", text.strip()) else 1
    return round(num * scale * negative * percent, 4)


def normalize(text: str) -> str:
    """TAT-QA's normalize_answer, token by token (split on single spaces)."""
    parts = []
    for token in text.split(" "):
        token = token.lower()
        if not is_number(token):
            token = "".join(ch for ch in token if ch not in _PUNCTUATION)
        if is_number(token):
            token = str(to_number(token))
        parts.append(" ".join(_ARTICLES.sub(" ", token).split()))
    return " ".join(p for p in parts if p.strip()).strip()


def answer_string(spans: Sequence[str]) -> str:
    """Sorted spans, numbers in their '%.4f' form, joined by spaces (TAT-QA's get_answer_str, no scale)."""
    out = []
    for span in sorted(spans):
        value = to_number(span) if is_number(span) else None
        if value is None:
            out.append(span)
        elif "%" in span:
            out.append(f"{value:.4f}")
        else:
            out.append(f"{round(value, 2):.4f}")
    return " ".join(out)


def _f1(pred: set[str], gold: set[str]) -> float:
    common = len(gold & pred)
    precision = common / len(pred) if pred else 1.0
    recall = common / len(gold) if gold else 1.0
    return 0.0 if precision == recall == 0.0 else 2 * precision * recall / (precision + recall)


def _match(pred: str, gold: str) -> tuple[float, float]:
    p, g = normalize(pred), normalize(gold)
    return float(p == g), round(_f1(set(p.split()), set(g.split())), 2)


def score_one(pred_spans: Sequence[str], gold: SpanAnswer) -> tuple[float, float]:
    """(exact match, F1), each 0 or 1 / 0..1, for one question."""
    if not pred_spans or not gold.spans:
        return 0.0, 0.0
    golds = [str(int(gold.spans[0]))] if gold.answer_type == "count" else list(gold.spans)
    candidates = [answer_string(pred_spans)]
    if len(pred_spans) == 1 and "%" not in pred_spans[0] and is_number(pred_spans[0]):
        value = to_number(pred_spans[0])
        if value is not None:
            candidates.append(f"{value:.4f}")
    gold_string = answer_string(golds)
    em, f1 = max(_match(c, gold_string) for c in candidates)
    return (em, em) if gold.answer_type in EXACT_ONLY else (em, f1)


def split_spans(text: str, separator: str) -> list[str]:
    """A generated answer as the spans it states, split where training answers joined them."""
    return [s.strip() for s in text.split(separator) if s.strip()]


def tatqa(
    ids: Sequence[str], preds: Sequence[str], refs: Sequence[Sequence[str]], golds: Sequence[SpanAnswer | None] = (), **_: object
) -> dict[str, Evidence]:
    """The `tatqa` metric family: gen/tatqa_em and gen/tatqa_f1 per answer (means over answers)."""
    if len(golds) != len(preds) or any(g is None for g in golds):
        raise ValueError("the tatqa metric scores context_qa answers (data.task.type: context_qa) and needs their spans")
    pairs = [score_one(split_spans(p, g.separator), g) for p, g in zip(preds, golds, strict=True) if g is not None]
    return {
        "tatqa_em": Evidence("mean", list(ids), [100.0 * em for em, _ in pairs]),
        "tatqa_f1": Evidence("mean", list(ids), [100.0 * f1 for _, f1 in pairs]),
    }
