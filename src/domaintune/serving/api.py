"""The OpenAI-compatible HTTP API and the web chat page (FastAPI; served by uvicorn from scripts/serve.py).

Endpoints: GET /v1/models, POST /v1/chat/completions (streamed as server-sent events or whole), GET /health,
GET / (the chat page). Errors use OpenAI's JSON shape on every path and method, so the official clients raise
their usual exceptions: 400 bad request, 401 missing or wrong API key, 404 unknown model or path, 405 wrong
method, 413 request too large, 503 overloaded (with Retry-After). With API keys configured, every endpoint but
the chat page itself wants `Authorization: Bearer <key>`. Each request is logged (method, path, status, latency,
model: never message contents or keys) to the `domaintune.access` logger.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from domaintune.serving import engine
from domaintune.serving.registry import ServedModel
from domaintune.utils.logging import get_logger

access_log = get_logger("domaintune.access")
# what anyone may fetch without a key: the chat page itself (it asks for the key, then sends it on every call)
PUBLIC = {("GET", "/")}


@dataclass(frozen=True)
class Limits:
    """What one server accepts (conf/serve.yaml `limits`): bounded bodies, generations and waiting line."""

    max_request_bytes: int
    max_concurrent: int
    max_queue: int
    max_tokens: int


@dataclass(frozen=True)
class Defaults:
    """Sampling values for options a request leaves out (conf/serve.yaml `generation`)."""

    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    # text, or a list of text parts as many OpenAI clients send (`[{"type": "text", "text": ...}]`): the parts'
    # texts joined by newlines; other part types (images, audio) are refused by name
    content: str | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            other = sorted({str(p.get("type")) for p in value if isinstance(p, dict) and p.get("type") != "text"})
            if other:
                raise ValueError(f"content parts of type {', '.join(other)} are not supported by this text-only server")
        return value

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request this server honours; any other field is refused by name, never ignored."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    seed: int | None = None
    user: str | None = None  # an end-user id for the caller's logs; it changes nothing here


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class Gate:
    """Bounded concurrency with a bounded waiting line: a request beyond both is refused (503), never dropped."""

    def __init__(self, limits: Limits):
        self.slots = asyncio.Semaphore(limits.max_concurrent)
        self.capacity = limits.max_concurrent + limits.max_queue
        self.inside = 0

    def admit(self) -> None:
        if self.inside >= self.capacity:
            raise ApiError(
                503,
                f"The server is busy: {self.inside} requests are generating or waiting (limit {self.capacity}). "
                "Retry after a moment, or start the server with a larger limits.max_queue.",
                "server_overloaded",
                headers={"Retry-After": "1"},
            )
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (a chunked upload cannot grow unbounded)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body has {declared} bytes; this server accepts at most {limit}.", "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"The request body is over {limit} bytes, the most this server accepts.", "request_too_large")
    return bytes(body)


def parse(body: bytes) -> ChatRequest:
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        unsupported = ("Extra inputs are not permitted", "not supported by this server")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].replace(*unsupported)}" for e in exc.errors()
        )
        raise ApiError(400, f"Invalid chat request: {problems}.", "invalid_request_error") from None


def create_app(models: dict[str, ServedModel], limits: Limits, defaults: Defaults, api_keys: list[str] | None = None) -> FastAPI:
    """The API over already-loaded models (tests build it with the tiny model; scripts/serve.py runs it).
    `api_keys`: the Bearer tokens accepted (none: an open server, which scripts/serve.py allows on loopback only)."""
    app = FastAPI(title="DomainTune", docs_url="/docs")
    gate = Gate(limits)
    keys = [k.encode() for k in api_keys or []]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # unknown paths and wrong methods answer in OpenAI's shape too, not FastAPI's {"detail": ...}
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        message = {404: "No such endpoint: this server has GET /v1/models and POST /v1/chat/completions."}.get(
            exc.status_code, str(exc.detail)
        )
        return ApiError(exc.status_code, message, "invalid_request_error", kind, dict(exc.headers or {})).response()

    @app.middleware("http")
    async def _guard_and_log(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        if keys and (request.method, request.url.path) not in PUBLIC:
            given = request.headers.get("authorization", "")
            token = given[7:].strip().encode() if given.lower().startswith("bearer ") else b""
            # compare_digest against every key: the time taken says nothing about how much of a key was right
            if not any([hmac.compare_digest(token, k) for k in keys]):
                what = "No API key was given" if not token else "The API key is not valid"
                response: Response = ApiError(
                    401,
                    f"{what}: send it as the header 'Authorization: Bearer <key>' (the key the server was started with).",
                    "invalid_request_error",
                    "invalid_api_key",
                ).response()
                _log_access(request, response.status_code, started)
                return response
        response = await call_next(request)
        _log_access(request, response.status_code, started)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "busy": gate.inside}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in models.values()]}

    page = resources.files("domaintune.serving").joinpath("static/chat.html").read_text(encoding="utf-8")  # read once

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = parse(await read_body(request, limits.max_request_bytes))
        request.state.model = req.model  # for the access log
        served = models.get(req.model)
        if served is None:
            raise ApiError(
                404,
                f"The model '{req.model}' is not served here; GET /v1/models lists: {', '.join(models)}.",
                "invalid_request_error",
                "model_not_found",
            )
        options = decide(req, defaults, limits)
        ids = engine.prompt_ids(served, options)
        if len(ids) + options.max_tokens > served.context_length:
            raise ApiError(
                400,
                f"The conversation has {len(ids)} prompt tokens; with max_tokens={options.max_tokens} it exceeds the "
                f"model's context of {served.context_length} tokens. Shorten the conversation or lower max_tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        gate.admit()
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            try:
                async with gate.slots:
                    piece = await run_in_threadpool(engine.complete, served, options, ids)
            finally:
                gate.leave()
            return completion_body(reply_id, created, served.id, piece)
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            events(gate, served, options, ids, reply_id, created, usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _log_access(request: Request, status: int, started: float) -> None:
    """One line per request: never the message contents, never the key."""
    model = getattr(request.state, "model", "-")
    ms = 1000 * (time.perf_counter() - started)
    access_log.info(f"{request.method} {request.url.path} {status} {ms:.0f} ms model={model}")


def decide(req: ChatRequest, defaults: Defaults, limits: Limits) -> engine.Request:
    """Every sampling option decided: the request's value, else the server's configured default."""
    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(
            400,
            f"max_tokens={asked} is over this server's limit of {limits.max_tokens} tokens per answer.",
            "invalid_request_error",
        )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        message = f"stop has {len(stop)} strings; at most 4 are accepted (as in OpenAI's API)."
        raise ApiError(400, message, "invalid_request_error")
    return engine.Request(
        messages=[{"role": m.role, "content": m.text()} for m in req.messages],
        max_tokens=asked or defaults.max_tokens,
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=defaults.top_p if req.top_p is None else req.top_p,
        repetition_penalty=defaults.repetition_penalty,
        stop=stop,
        seed=req.seed,
    )


def completion_body(reply_id: str, created: int, model: str, piece: engine.Piece) -> dict[str, Any]:
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": piece.text}, "finish_reason": piece.finish_reason}],
        "usage": usage_body(piece),
    }


def usage_body(piece: engine.Piece) -> dict[str, int]:
    return {
        "prompt_tokens": piece.prompt_tokens,
        "completion_tokens": piece.completion_tokens,
        "total_tokens": piece.prompt_tokens + piece.completion_tokens,
    }


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def events(
    gate: Gate, served: ServedModel, options: engine.Request, ids: list[int], reply_id: str, created: int, usage: bool
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": served.id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    cancel = threading.Event()
    pieces = engine.stream(served, options, ids, cancel)
    try:
        async with gate.slots:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            async for piece in iterate_in_threadpool(pieces):
                if piece.text:
                    yield _sse(chunk({"content": piece.text}))
                if piece.finish_reason:
                    yield _sse(chunk({}, piece.finish_reason))
                    if usage:
                        yield _sse({**chunk({}), "choices": [], "usage": usage_body(piece)})
            yield _sse("[DONE]")
    except Exception as exc:  # headers are sent: the error can only travel as an event
        yield _sse({"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error", "param": None, "code": None}})
    finally:
        cancel.set()  # stops a generation whose client went away (the worker may still be inside next())
        gate.leave()
