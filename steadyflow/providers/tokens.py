"""Count a prompt's tokens before it is sent, and fit it into the model's context.

An endpoint refuses a prompt longer than its context with a bare HTTP 400 (llama.cpp, vLLM,
OpenAI), after the request was built and queued. Counting first lets the ladder skip the rung
with a reason (``prompt exceeds context (N > M tokens)``) or cut the document to fit, as the
stage's ``input.on_overflow`` says.

Two counters:

* :class:`VocabCounter`, exact, for the embedded local model (and any model whose ``tokenizer``
  names a GGUF file): llama.cpp's own tokenizer over the GGUF *vocabulary only*
  (``Llama(vocab_only=True)``), loaded once per file, and the chat template the GGUF carries, so
  the count is what the server's ``usage.prompt_tokens`` says. Chosen over the server's
  ``/extras/tokenize`` route because that route takes the same lock as a completion: every count
  would wait behind the running generation (1-2 s), and it exists only on our own server.
  Cost, measured here (Qwen2.5 0.5B GGUF, 2 cores): 0.5 s and ~50 MB once per file to load the
  vocabulary, then ~1.7 us per character (35 ms for a 20,000-character document), run in a worker
  thread so the event loop goes on; a prompt whose UTF-8 size already fits is not tokenized at
  all (a token is at least one byte).
* :class:`EstimateCounter` for any other endpoint: one token per 3 ASCII characters, rounded up,
  and one per non-ASCII character. English prose averages ~4 characters per token with the
  GPT, Llama and Qwen vocabularies (3.7 measured on our README with Qwen2.5), so this is a safe
  upper bound for English; text in scripts a vocabulary covers poorly, long digit runs or emoji
  can take more: configure ``tokenizer`` for such models.

The response schema instructor sends with the prompt (in the system message in JSON mode, as a
tool definition in tools mode) is counted too. Re-asks grow the prompt after this check; an
endpoint's own refusal of one is classified as ``context_overflow`` (see
:func:`steadyflow.providers.errors.classify`).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from steadyflow.spec.models import ModelSpec

DEFAULT_LOCAL_CONTEXT = 4096
"""Context of the server a run starts for ``provider: local`` when ``context_tokens`` is not given."""
MESSAGE_OVERHEAD = 8
"""Tokens a chat template adds per message (role markers, separators) in the estimate: 4-6 in ChatML and Llama 3."""
_SCHEMA_NOTE = (
    "As a genius expert, your task is to understand the content and provide the parsed objects in json "
    "that match the following json_schema:\n\n{schema}\n\n"
    "Make sure to return an instance of the JSON, not the schema itself"
)
_MAX_CUTS = 4

Messages = list[dict[str, str]]


class TokenCounter(Protocol):
    """Counts the tokens of a chat prompt, and cuts a text to a number of tokens."""

    exact: bool

    def count(self, messages: Messages) -> int:
        """Tokens of ``messages`` as the model's chat template renders them."""

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` alone."""

    def cut(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` with at most ``tokens`` tokens."""


class EstimateCounter:
    """An upper-bound estimate for English text: ASCII characters / 3 rounded up, plus one per other character."""

    exact = False

    def count_text(self, text: str) -> int:
        """Estimated tokens of ``text``."""
        other = sum(1 for c in text if ord(c) > 127) if not text.isascii() else 0
        return math.ceil((len(text) - other) / 3) + other

    def count(self, messages: Messages) -> int:
        """Estimated tokens of ``messages``, with :data:`MESSAGE_OVERHEAD` per message and 3 to start the answer."""
        return sum(self.count_text(m.get("content") or "") + MESSAGE_OVERHEAD for m in messages) + 3

    def cut(self, text: str, tokens: int) -> str:
        """A prefix of at most ``tokens`` estimated tokens."""
        if tokens <= 0:
            return ""
        end = min(len(text), tokens * 3)
        while end > 0 and self.count_text(text[:end]) > tokens:  # non-ASCII characters count one each
            end -= max(1, (self.count_text(text[:end]) - tokens))
        return text[: max(end, 0)]


_LOG_CALLBACK: list[Any] = []


def _quiet_llama_log(llama_cpp: Any) -> None:
    """Silence llama.cpp's log in this process (the model server is another process, with its own).

    Loading a vocabulary alone warns "n_ctx_seq (512) > n_ctx_train (0)", and llama-cpp-python's
    level table is one off from ggml's (WARN arrives as ERROR), so ``verbose=False`` prints it in the
    middle of a run. Loading errors still surface, as exceptions.
    """
    if not _LOG_CALLBACK:
        callback = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        _LOG_CALLBACK.append(callback)  # referenced for the life of the process: C keeps a pointer to it
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class VocabCounter:
    """Exact counts with a GGUF's own tokenizer and chat template (llama-cpp-python, vocabulary only)."""

    exact = True

    def __init__(self, path: Path) -> None:
        import llama_cpp  # lazy: only pipelines with a local model or a configured tokenizer need it
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        _quiet_llama_log(llama_cpp)
        self._llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        # freed before the interpreter tears llama_cpp's module down: its __del__ then prints a traceback at exit
        atexit.register(self._llama.close)
        self._lock = threading.Lock()  # one tokenization at a time per vocabulary: llama.cpp does not promise more
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
            )

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else self._llama.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _tokens(self, text: str, *, special: bool, bos: bool = False) -> list[int]:
        with self._lock:
            return list(self._llama.tokenize(text.encode("utf-8"), add_bos=bos, special=special))

    def count(self, messages: Messages) -> int:
        """Tokens of the prompt the server builds from ``messages``.

        The server builds it with its chat template, as llama-cpp-python applies it.
        """
        if self._formatter is None:
            return (
                sum(len(self._tokens(m.get("content") or "", special=False)) + MESSAGE_OVERHEAD for m in messages) + 3
            )
        result = self._formatter(messages=messages)  # type: ignore[arg-type]  # plain role/content dicts are what it reads
        return len(self._tokens(result.prompt, special=True, bos=not result.added_special))

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` alone."""
        return len(self._tokens(text, special=False))

    def cut(self, text: str, tokens: int) -> str:
        """The text of the first ``tokens`` tokens of ``text`` (a split character at the end is dropped)."""
        if tokens <= 0:
            return ""
        ids = self._tokens(text, special=False)[:tokens]
        with self._lock:
            return self._llama.detokenize(ids).decode("utf-8", errors="ignore")


@lru_cache(maxsize=8)
def vocab_counter(path: str) -> VocabCounter:
    """One :class:`VocabCounter` per GGUF file for the life of the process (loading costs ~0.5 s)."""
    return VocabCounter(Path(path))


_LOAD_LOCK = threading.Lock()


def counter_for(spec: ModelSpec) -> TokenCounter:
    """The counter of a model: its ``tokenizer`` GGUF, the local model's own vocabulary, else the estimate."""
    path = spec.tokenizer
    if path is None and spec.provider == "local" and spec.base_url is None:
        if spec.model_path:
            path = spec.model_path
        else:
            from steadyflow.providers.local_model import model_file

            path = str(model_file())
    if path is None:
        return EstimateCounter()
    with _LOAD_LOCK:  # two documents arriving at once load the vocabulary once
        return vocab_counter(str(Path(path).expanduser()))


def context_of(spec: ModelSpec) -> int | None:
    """The context window of a model in tokens: declared, or the local server's default.

    None when unknown (no check).
    """
    if spec.context_tokens is not None:
        return spec.context_tokens
    if spec.provider == "local" and spec.base_url is None:
        return DEFAULT_LOCAL_CONTEXT
    return None


def schema_note(response_model: type[BaseModel]) -> Messages:
    """The response schema as instructor adds it to a prompt, as one more message to count."""
    schema = json.dumps(response_model.model_json_schema(), indent=2, ensure_ascii=False)
    return [{"role": "system", "content": _SCHEMA_NOTE.format(schema=schema)}]


@dataclass
class Fit:
    """The outcome of fitting one prompt into one model's context."""

    messages: Messages | None
    """What to send, or None: the prompt does not fit and may not be cut."""
    tokens: int
    """Prompt tokens counted (after any cut), the response schema included."""
    context: int
    max_tokens: int
    truncated_to: int | None = None
    """Tokens of the document text kept, when it was cut."""

    @property
    def reason(self) -> str:
        """Why the prompt was not sent, without any of its text."""
        return (
            f"prompt exceeds context ({self.tokens} > {self.context - self.max_tokens} tokens: "
            f"context {self.context} less max_tokens {self.max_tokens})"
        )


def _fits_by_size(messages: Messages, extra: Messages, limit: int) -> bool:
    """True when the prompt surely fits, judged by its size in bytes.

    A token covers at least one byte; a template adds < 16 tokens a message,
    and < 64 more (a default system prompt, the start of the answer).
    """
    size = sum(len((m.get("content") or "").encode("utf-8")) + 16 for m in [*messages, *extra]) + 64
    return size <= limit


def fit_prompt(
    counter: TokenCounter,
    messages: Messages,
    extra: Messages,
    context: int,
    max_tokens: int,
    text: str | None = None,
    render: Callable[[str], Messages] | None = None,
) -> Fit:
    """Fit ``messages`` (and ``extra``, the schema) with room for ``max_tokens`` of answer into ``context``.

    With ``render`` (the stage's ``on_overflow: truncate``) the document ``text`` is cut, never the
    instructions: the prompt is rendered again from a prefix of the text, recounted, and cut
    further if the template repeats the text, at most a few times.
    """
    limit = context - max_tokens
    if _fits_by_size(messages, extra, limit):
        return Fit(messages, 0, context, max_tokens)
    tokens = counter.count([*messages, *extra]) if extra else counter.count(messages)
    if tokens <= limit:
        return Fit(messages, tokens, context, max_tokens)
    if render is None or not text:
        return Fit(None, tokens, context, max_tokens)
    keep = counter.count_text(text)
    for _ in range(_MAX_CUTS):
        # the overflow comes off the text; if that leaves nothing, the template repeats the text: scale it down instead
        keep = keep - (tokens - limit) if keep > tokens - limit else keep * limit // tokens
        if keep <= 0:
            break
        cut = render(counter.cut(text, keep))
        tokens = counter.count([*cut, *extra])
        if tokens <= limit:
            return Fit(cut, tokens, context, max_tokens, truncated_to=keep)
    return Fit(None, tokens, context, max_tokens)


async def fit_for(
    spec: ModelSpec,
    response_model: type[BaseModel],
    messages: Messages,
    text: str | None = None,
    render: Callable[[str], Messages] | None = None,
) -> Fit | None:
    """:func:`fit_prompt` for a model spec, in a worker thread (tokenizing is CPU work).

    None when the context is unknown.
    """
    context = context_of(spec)
    if context is None:
        return None

    def work() -> Fit:
        counter = counter_for(spec)
        return fit_prompt(counter, messages, schema_note(response_model), context, spec.max_tokens, text, render)

    return await asyncio.to_thread(work)
