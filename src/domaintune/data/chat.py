"""Chat rendering and loss masking: the one place that turns conversations into token ids.

Training, evaluation, generation and chat all call this, so the prompt a model sees at inference time is
exactly the prefix it was trained on. Assistant spans are found by rendering growing prefixes of the
conversation through the tokenizer's own chat template and mapping character spans to tokens, which works
for any template that renders prefixes consistently (ChatML, Llama 3, Mistral, Qwen...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from domaintune.data.formats import Message
from domaintune.models.loss import IGNORE
from domaintune.utils.errors import DomainTuneError


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


class ChatRenderer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def assistant_spans(self, messages: list[Message], train_on: str = "all") -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans of the assistant turns to train on.

        A span covers the turn's content and its end-of-turn marker (so the model learns to stop),
        not the trailing newline after it.
        """
        full = self.render(messages)
        targets = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if train_on == "last":
            targets = targets[-1:]
        spans = []
        for i in targets:
            prefix = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[: i + 1])
            if not (upto.startswith(prefix) and full.startswith(upto)):
                raise DomainTuneError(
                    "The tokenizer's chat template does not render a conversation's prefixes as prefixes of the "
                    "whole, so the assistant's tokens cannot be located for loss masking.",
                    "Set model.chat_template to a template that does (for example ChatML).",
                )
            spans.append((len(prefix), len(upto.rstrip())))
        return full, spans

    def encode_many(self, conversations: list[list[Message]], train_on: str = "all") -> list[Encoded]:
        """Tokenise conversations (batched, fast) with labels = token ids on assistant spans, -100 elsewhere."""
        rendered = [self.assistant_spans(c, train_on) for c in conversations]
        enc = self.tok([t for t, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for (_, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
            labels = [
                tid if any(s <= start < e for s, e in spans) else IGNORE for tid, (start, _end) in zip(ids, offsets, strict=True)
            ]
            out.append(self._truncate(ids, labels))
        return out

    def encode_texts(self, texts: list[str]) -> list[Encoded]:
        """Continued pre-training: every token (and a closing EOS) is trained."""
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        return [self._truncate(ids + eos, ids + eos) for ids in self.tok(texts, add_special_tokens=True)["input_ids"]]

    def _truncate(self, ids: list[int], labels: list[int]) -> Encoded:
        if len(ids) <= self.max_length:
            return Encoded(ids, labels)
        return Encoded(ids[: self.max_length], labels[: self.max_length], truncated=True)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Token ids of the prompt for generating the next assistant turn (drops a trailing assistant turn)."""
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        return self.tok(self.render(messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]

    def stop_token_ids(self) -> list[int]:
        """Ids that end an assistant turn: EOS plus the template's end-of-turn token.

        The end-of-turn token is found by rendering a probe conversation, not from a list of known
        markers, so any single-token marker of any template works.
        """
        ids = {self.tok.eos_token_id} if self.tok.eos_token_id is not None else set()
        content = "ok"
        full, [(start, end)] = self.assistant_spans(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]
        )
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        after = [
            tid for tid, (s, _e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True) if start + len(content) <= s < end
        ]
        if len(after) == 1:
            ids.add(after[0])
        return sorted(ids)


def renderer_for(data_cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase) -> ChatRenderer:
    """The renderer of a data config (its `max_length`): the one reader of that setting outside the data
    pipeline (whose DataModule builds its own from the recipe), so chat, generate and serving truncate prompts
    exactly as training did."""
    return ChatRenderer(tokenizer, int(data_cfg["max_length"]))
