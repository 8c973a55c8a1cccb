"""Generation for the API: one request in, text (whole or streamed) out, with OpenAI's stop/finish semantics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from domaintune.data.formats import Message
from domaintune.evaluation.generation import generate_options
from domaintune.serving.registry import ServedModel


@dataclass
class Request:
    """A validated chat request with every sampling option decided (request value or the server's default)."""

    messages: list[Message]
    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    stop: list[str]
    seed: int | None = None


@dataclass
class Piece:
    """A streamed piece of the answer; the last one carries the finish reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Cancelled(StoppingCriteria):
    """Stops generation when the client has gone (a closed stream must not keep the cores busy)."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class StopScanner:
    """Cuts streamed text at the first stop string, holding back a tail that could still become one.

    OpenAI's `stop` strings end the answer and are not part of it; a stop string can arrive split over
    several tokens, so text is released only once it cannot be the start of one.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.buffer += text
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        cut = max(len(self.buffer) - self.hold, 0)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


def prompt_ids(served: ServedModel, request: Request) -> list[int]:
    """The prompt exactly as training rendered it; the model's domain system prompt when the request has none."""
    messages = list(request.messages)
    if served.system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": served.system_prompt})
    return served.renderer.prompt_ids(messages)


def _options(served: ServedModel, request: Request) -> dict[str, Any]:
    """`generate` keyword arguments: the same builder as batch generation and chat.py (temperature 0 = greedy),
    stopping at the template's end-of-turn token, plus the request's stop strings."""
    sampling = {"do_sample": request.temperature > 0, "temperature": request.temperature, "top_p": request.top_p}
    limits = {"max_new_tokens": request.max_tokens, "repetition_penalty": request.repetition_penalty}
    options = generate_options({**sampling, **limits}, served.renderer, served.tokenizer, stop_ids=served.stop_ids)
    if request.stop:  # halts generation early; the text is still cut by StopScanner (stop strings are excluded)
        options.update(stop_strings=request.stop, tokenizer=served.tokenizer)
    return options


def stream(served: ServedModel, request: Request, ids: list[int], cancel: threading.Event | None = None) -> Iterator[Piece]:
    """Generate in a worker thread and yield text as it comes; closing the iterator or setting `cancel` (from
    any thread, e.g. when the HTTP client disconnects) stops the generation."""
    streamer = TextIteratorStreamer(served.tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancelled = Cancelled(cancel)
    result: dict[str, Any] = {}
    inputs = torch.tensor([ids])

    def work() -> None:
        try:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            with torch.inference_mode():
                result["ids"] = served.model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([cancelled]),
                    **_options(served, request),
                )
        except BaseException as exc:  # surfaced to the caller below, after the streamer is released
            result["error"] = exc
            streamer.end()

    thread = threading.Thread(target=work, name="domaintune-generate", daemon=True)
    scanner = StopScanner(request.stop)
    thread.start()
    try:
        for text in streamer:
            out = scanner.feed(text)
            if out:
                yield Piece(out)
            if scanner.stopped:
                cancelled.event.set()
                break
        thread.join()
        if "error" in result:
            raise result["error"]
        tail = scanner.flush()
        new = result["ids"][0, len(ids) :].tolist()
        ended = bool(new) and new[-1] in served.stop_ids
        reason = "stop" if scanner.stopped or ended or len(new) < request.max_tokens else "length"
        yield Piece(tail, finish_reason=reason, prompt_tokens=len(ids), completion_tokens=len(new))
    finally:
        cancelled.event.set()  # the client went away (or we stopped): let the worker finish at once
        thread.join()


def complete(served: ServedModel, request: Request, ids: list[int]) -> Piece:
    """The whole answer at once (the non-streaming API), through the same path as streaming."""
    pieces = list(stream(served, request, ids))
    last = pieces[-1]
    return Piece("".join(p.text for p in pieces), last.finish_reason, last.prompt_tokens, last.completion_tokens)
