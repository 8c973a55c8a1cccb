"""Tasks: how a raw record becomes a conversation (system / user / assistant turns).

Each task type knows which *canonical* fields it needs; `data.task.fields` maps them to the columns of
the user's data, and Jinja templates in config (`data.task.prompt` / `data.task.response`) hold all the
wording, so no prompt text lives in code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from domaintune.utils.errors import DomainTuneError, choices, unknown_option

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


def compile_template(text: str, what: str) -> jinja2.Template:
    """A prompt template from config (sandboxed; an undefined field is an error, not an empty string)."""
    try:
        return SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False).from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise DomainTuneError(f"{what} is not a valid Jinja template: {exc}.", "Fix the template text.") from exc


@dataclass(frozen=True)
class TaskSpec:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    dict_fields: tuple[str, ...] = ()  # fields holding a {name: value} mapping instead of text
    list_fields: tuple[str, ...] = ()  # fields holding a list of strings
    index_fields: tuple[str, ...] = ()  # fields holding a list of 0-based positions (into `sentences`)
    # fields many records share (a report, an abstract): deduplication compares them by digest, so that several
    # questions about one long context are not taken for near-duplicates of each other
    context_fields: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {
    "qa": TaskSpec(required=("question", "answer")),
    "chat": TaskSpec(required=("messages",)),
    "instruction": TaskSpec(required=("instruction", "output"), optional=("input",)),
    "summarization": TaskSpec(required=("document", "summary"), optional=("references", "title"), list_fields=("references",)),
    "generation": TaskSpec(required=("attributes", "text"), optional=("title",), dict_fields=("attributes",)),
    "fact_check": TaskSpec(required=("claim", "label"), optional=("evidence", "explanation")),
    # a verdict that cites its sources: the claim and a whole abstract as numbered sentences -> the label and the
    # numbers of the sentences that decide it (`citations`: 0-based positions in `sentences`, as in the data)
    "cited_fact_check": TaskSpec(
        required=("claim", "sentences", "citations", "label"),
        list_fields=("sentences",),
        index_fields=("citations",),
        context_fields=("sentences",),
    ),
    # an answer read from a given context (a report's table and paragraphs): one span or several (a list),
    # written joined by data.task.span_separator and scored span by span (TAT-QA's exact match and F1)
    "context_qa": TaskSpec(
        required=("context", "question", "answer"),
        optional=("answer_type",),
        list_fields=("answer",),
        context_fields=("context",),
    ),
    "text": TaskSpec(required=("text",)),
    # preference pairs (DPO/ORPO, objective=dpo|orpo): a prompt (text, or messages ending with a user turn) and
    # a better and a worse answer; trained and evaluated as SFT on `chosen` otherwise
    "preference": TaskSpec(required=("prompt", "chosen", "rejected"), optional=("system",)),
}
# The canonical field that holds the reference answer, for evaluation.
TARGET_FIELD = {
    "qa": "answer",
    "instruction": "output",
    "summarization": "summary",
    "generation": "text",
    "fact_check": "label",
    "cited_fact_check": "label",
    "context_qa": "answer",
    "preference": "chosen",
}


# task types whose answer starts with a label from data.task.labels
LABEL_TASKS = ("fact_check", "cited_fact_check")


@dataclass(frozen=True)
class CitedAnswer:
    """The gold answer of a cited_fact_check record as its citation scorer needs it: the rendered reference, whose
    sentence numbers are read by the same parser as the generated answer's (so the numbering is the response
    template's, written once in config)."""

    reference: str


@dataclass(frozen=True)
class SpanAnswer:
    """The gold answer of a context_qa record as its scorer needs it: the spans (not their joined text) and
    the answer type (TAT-QA scores a `count` by exact match alone)."""

    spans: tuple[str, ...]
    answer_type: str
    separator: str


class RecordProblem(ValueError):
    """A record that cannot become an example; `reason` is the audit's count key."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


class Task:
    """One configured task: field mapping, type checks and conversation rendering."""

    def __init__(
        self,
        *,
        type: str,
        fields: dict[str, str] | None,
        system_prompt: str | None,
        prompt: str | None,
        response: str | None,
        labels: list[str] | None,
        train_on: str,
        span_separator: str | None,
    ):
        """`data.task` of a data config (conf/data/_base.yaml documents each key): `Task(**recipe.task)`."""
        self.type = type
        if self.type not in TASKS:
            raise unknown_option("task type", self.type, TASKS, "Set data.task.type to one of them.")
        self.spec = TASKS[self.type]
        fields = fields or {}
        unknown = set(fields) - set(self.spec.required) - set(self.spec.optional)
        if unknown:
            raise DomainTuneError(
                f"data.task.fields maps {choices(unknown)}, which task type '{self.type}' does not use.",
                f"Its fields are {choices(self.spec.required + self.spec.optional)}: map each to a column of your data.",
            )
        # canonical name -> column name in the data (identity unless configured)
        self.fields = {name: fields.get(name, name) for name in self.spec.required + self.spec.optional}
        self.system_prompt = system_prompt
        odd = [label for label in labels or [] if not isinstance(label, str)]
        if odd:
            raise DomainTuneError(
                f"data.task.labels holds {odd[0]!r}, which is not text (YAML reads unquoted true, false, yes, no and "
                "numbers as other types).",
                'Quote the labels, e.g. \'data.task.labels=["true","false","not_enough_info"]\'.',
            )
        self.labels = list(labels) if labels else None
        self.train_on = train_on
        if self.train_on not in ("all", "last"):
            raise unknown_option("data.task.train_on", self.train_on, ("all", "last"), "Use all or last.")
        self.span_separator = span_separator
        if (self.type == "context_qa") != (span_separator is not None):
            raise DomainTuneError(
                f"data.task.span_separator is {span_separator!r} for task type '{self.type}': only context_qa "
                "writes several answer spans, and it needs to know how they are joined.",
                'Set data.task.span_separator (e.g. "; ") for context_qa and null for every other task type.',
            )
        if span_separator is not None and not span_separator.strip():
            raise DomainTuneError(
                f"data.task.span_separator is {span_separator!r}: a blank separator cannot be told from the spaces "
                "inside a span, so a multi-span answer could not be split back into its spans.",
                'Use visible text, e.g. "; ".',
            )
        self._prompt = self._template(prompt, "prompt")
        self._response = self._template(response, "response")
        if self.type in LABEL_TASKS and not self.labels:
            raise DomainTuneError(f"Task type '{self.type}' needs its label set.", "Set data.task.labels, e.g. [true, false].")

    def _template(self, text: str | None, key: str) -> jinja2.Template | None:
        if text is None:
            if self.type in ("chat", "text", "preference"):
                return None
            raise DomainTuneError(
                f"data.task.{key} is not set for task type '{self.type}'.", "Give a Jinja template, e.g. '{{ question }}'."
            )
        return compile_template(text, f"data.task.{key}")

    # ---------------------------------------------------------------- fields
    def check_columns(self, columns: set[str], origin: str) -> None:
        """Fail early, listing the real columns, when a required field's column is absent everywhere."""
        absent = [f"{name} -> '{col}'" for name, col in self.fields.items() if name in self.spec.required and col not in columns]
        if absent:
            raise DomainTuneError(
                f"The data in {origin} has no column for {', '.join(absent)} (task type '{self.type}'). "
                f"Its columns are: {choices(columns)}.",
                "Map each field to an existing column with data.task.fields.<field>=<column>.",
            )

    def select(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Map one raw record to canonical fields with checked types; raise RecordProblem if unusable."""
        rec: dict[str, Any] = {"_src": raw.get("_src", "?")}
        for name, col in self.fields.items():
            value = raw.get(col)
            if value is None or (isinstance(value, str | list | dict) and len(value) == 0):
                if name in self.spec.required:
                    raise RecordProblem(f"missing_{name}", f"field '{col}' is missing or empty")
                continue
            rec[name] = self._typed(name, col, value)
        if self.type == "preference" and rec["chosen"].strip() == rec["rejected"].strip():
            raise RecordProblem("identical_pair", "chosen and rejected are the same answer: the pair teaches nothing")
        if self.type in LABEL_TASKS and self.labels is not None:
            rec["label"] = rec["label"].strip()
            if rec["label"] not in self.labels:
                raise RecordProblem("label_not_in_set", f"label '{rec['label']}' is not one of {self.labels}")
        if self.type == "cited_fact_check":
            outside = [i for i in rec["citations"] if i >= len(rec["sentences"])]
            if outside:
                raise RecordProblem(
                    "citation_out_of_range", f"cites sentence {outside[0]} (0-based) of {len(rec['sentences'])} sentences"
                )
        return rec

    def _typed(self, name: str, col: str, value: Any) -> Any:
        if name == "messages":
            return self._messages(value)
        if self.type == "preference" and isinstance(value, list):
            return self._preference_part(name, col, value)
        if name in self.spec.dict_fields:
            if isinstance(value, str):  # e.g. a CSV cell holding JSON
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise RecordProblem("wrong_type", f"field '{col}' should be an object, got a string") from None
            if not isinstance(value, dict):
                raise RecordProblem("wrong_type", f"field '{col}' should be an object, got {type(value).__name__}")
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        if name in self.spec.index_fields:
            if not isinstance(value, list) or not all(
                (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (isinstance(v, str) and v.isdigit()) for v in value
            ):
                raise RecordProblem("wrong_type", f"field '{col}' should be a list of sentence positions (0, 1, ...)")
            return [int(v) for v in value]
        if name in self.spec.list_fields:
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RecordProblem("wrong_type", f"field '{col}' should be a list of strings")
            return value
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str):
            raise RecordProblem("wrong_type", f"field '{col}' should be text, got {type(value).__name__}")
        return value

    def _messages(self, value: Any) -> list[Message]:
        if not isinstance(value, list) or not value:
            raise RecordProblem("wrong_type", "field 'messages' should be a non-empty list of {role, content}")
        out = []
        for m in value:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise RecordProblem("wrong_type", f"a message should be {{role: one of {ROLES}, content: text}}, got {m!r:.80}")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "assistant":
            raise RecordProblem("no_assistant_turn", "the conversation does not end with an assistant turn")
        return out

    def _preference_part(self, name: str, col: str, value: list[Any]) -> Any:
        """Conversational pairs: `prompt` as messages ending with a user turn; `chosen`/`rejected` as one
        assistant message (its content is kept)."""
        if name == "prompt":
            msgs = self._messages([*value, {"role": "assistant", "content": "-"}])[:-1]
            if msgs[-1]["role"] != "user":
                raise RecordProblem("wrong_type", f"field '{col}' should end with a user turn")
            return msgs
        if len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
            content = value[0].get("content")
            if isinstance(content, str) and content:
                return content
        raise RecordProblem("wrong_type", f"field '{col}' should be text or one assistant message")

    def _preference_prompt(self, rec: dict[str, Any]) -> list[Message]:
        prompt = rec["prompt"]
        msgs = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        system = rec.get("system") or self.system_prompt
        if system and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system})
        return msgs

    def rejected_conversation(self, rec: dict[str, Any]) -> list[Message]:
        """A preference pair's worse answer after the same prompt (the better one is `conversation`)."""
        return [*self._preference_prompt(rec), {"role": "assistant", "content": rec["rejected"]}]

    # ---------------------------------------------------------------- rendering
    def _render(self, template: jinja2.Template, rec: dict[str, Any], key: str) -> str:
        ctx = {k: v for k, v in rec.items() if not k.startswith("_")}
        ctx.setdefault("labels", self.labels)
        ctx.setdefault("span_separator", self.span_separator)
        for name in self.spec.optional:
            ctx.setdefault(name, None)
        try:
            return template.render(**ctx).strip()
        except jinja2.UndefinedError as exc:
            raise DomainTuneError(
                f"data.task.{key} uses a variable the record does not have ({exc}). Available: {choices(ctx)}.",
                "Use only the task's field names in the template.",
            ) from exc
        except SecurityError as exc:  # the sandbox stops templates from reaching Python objects or files
            raise DomainTuneError(
                f"data.task.{key} tries something a data template may not do: {str(exc).rstrip('.')}.",
                "Templates may only format the record's fields (filters like join, lower, trim are fine).",
            ) from exc

    def conversation(self, rec: dict[str, Any]) -> list[Message]:
        """The full conversation for training, ending with the assistant turn(s) to learn."""
        if self.type == "chat":
            msgs = list(rec["messages"])
        elif self.type == "preference":
            return [*self._preference_prompt(rec), {"role": "assistant", "content": rec["chosen"]}]
        else:
            msgs = [
                {"role": "user", "content": self._render(self._prompt, rec, "prompt")},
                {"role": "assistant", "content": self._render(self._response, rec, "response")},
            ]
        if self.system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def prompt_format(self) -> str | None:
        """The user turn as training wrote it, with `<field>` placeholders for the record's values (a list field as
        two numbered items): what the web chat shows a user so that a question is asked the way the model learnt it.
        None for tasks whose user turn is free text (chat, text, preference)."""
        if self._prompt is None:
            return None
        example: dict[str, Any] = {"_src": "format"}
        for name in self.spec.required + self.spec.optional:
            if name in self.spec.list_fields:
                example[name] = [f"<{name} 1>", f"<{name} 2>"]
            elif name in self.spec.index_fields:
                example[name] = [0]
            elif name in self.spec.dict_fields:
                example[name] = {"<name>": "<value>"}
            else:
                example[name] = f"<{name}>"
        return self._render(self._prompt, example, "prompt")

    def text(self, rec: dict[str, Any]) -> str:
        """Raw text for continued pre-training (task type 'text')."""
        return rec["text"]

    def reference(self, rec: dict[str, Any]) -> str:
        """The text a generation is compared with: the rendered response (or last assistant turn)."""
        if self.type in ("chat", "text", "preference"):
            return rec["text"] if self.type == "text" else self.conversation(rec)[-1]["content"]
        return self._render(self._response, rec, "response")

    def references(self, rec: dict[str, Any]) -> list[str]:
        """All acceptable answers, for metrics: the gold label, the record's reference list, or the response."""
        if self.type in LABEL_TASKS:
            return [rec["label"]]
        if rec.get("references"):
            return list(rec["references"])
        return [self.reference(rec)]

    def gold(self, rec: dict[str, Any]) -> SpanAnswer | CitedAnswer | None:
        """The structured gold answer a span or citation scorer needs (context_qa, cited_fact_check), else None."""
        if self.type == "cited_fact_check":
            return CitedAnswer(self.reference(rec))
        if self.type != "context_qa":
            return None
        assert self.span_separator is not None  # checked in __init__
        return SpanAnswer(tuple(rec["answer"]), rec.get("answer_type") or "span", self.span_separator)
