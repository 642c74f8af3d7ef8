"""Model files in safetensors: quantized models saved by ``rwkv-tui quantize``, and plain
checkpoints.

Quantizing a large model at every start costs seconds; a quantized model file stores the
result, read back without quantizing again. safetensors holds no code, so opening a hostile
file cannot run anything; every field is checked before use, and a damaged file is refused in
one line (CheckpointError).

Layout of a quantized model file. Each quantized matrix ``K`` (a checkpoint key) is three
tensors: ``K.q`` (int8 levels, or uint8 nibble pairs for q4), ``K.d`` (fp16 block scales) and
``K.scale`` (its fp32 matrix scale, shape (1,)), laid out as engine/quant.py describes. Every
other tensor is stored under its checkpoint key as it was (the embedding of an int8 model is
bf16). ``__metadata__`` (strings): ``format`` = ``rwkv-tui-quantized-model``,
``format_version``, ``dtype`` (int8 or q4), ``group_size``, ``architecture`` (rwkv7-x070),
``source_fingerprint`` (engine.checkpoint.fingerprint of the weights it was made from, so state
files saved with either model fit both), ``source`` (the file's name) and ``matrices``, a JSON
object ``{K: {"format", "shape" (as in the checkpoint), "transposed"}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from engine.atomic import atomic_write_bytes
from engine.errors import CheckpointError
from engine.quant import FORMATS, GROUP, QuantizedMatrix

FORMAT = "rwkv-tui-quantized-model"
FORMAT_VERSION = 1
ARCHITECTURE = "rwkv7-x070"
SUFFIX = ".safetensors"
#: A model's header lists a few hundred tensors; anything far larger is not one of ours.
_MAX_HEADER_BYTES = 64 << 20
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_LEVEL_DTYPES = {"int8": torch.int8, "q4": torch.uint8}

Weights = dict[str, "torch.Tensor | QuantizedMatrix"]


@dataclass(frozen=True)
class ModelFile:
    """What a safetensors model file holds."""

    weights: Weights
    #: The quantized format (int8/q4) of a quantized model file; None for a plain checkpoint.
    dtype: str | None
    #: The source checkpoint's fingerprint for a quantized model file; None for a plain one.
    fingerprint: str | None


def is_safetensors(path: str | Path) -> bool:
    """Whether a file starts like safetensors (a little-endian header length, then ``{``)."""
    try:
        with Path(path).expanduser().open("rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _MAX_HEADER_BYTES


def read_model_file(path: str | Path) -> ModelFile:
    """Read a safetensors model file: quantized by rwkv-tui, or a plain checkpoint's tensors."""
    path = Path(path).expanduser()
    header = _read_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt header (__metadata__ is not an object)")
    tensors = _read_tensors(path)
    if meta.get("format") != FORMAT:
        return ModelFile(dict(tensors), None, None)
    return _quantized_model(path, meta, tensors)


def save_quantized_model(
    path: str | Path, weights: Mapping[str, torch.Tensor | QuantizedMatrix], dtype: str,
    fingerprint: str, source: str = "",
) -> Path:
    """Write quantized weights (engine.backends.cpu.quantize_weights) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    matrices: dict[str, dict[str, Any]] = {}
    for key, value in weights.items():
        if isinstance(value, QuantizedMatrix):
            tensors[key + ".q"] = value.q.contiguous()
            tensors[key + ".d"] = value.d.contiguous()
            tensors[key + ".scale"] = torch.tensor([value.scale], dtype=torch.float32)
            matrices[key] = {
                "format": value.format, "shape": list(value.checkpoint_shape), "transposed": value.transposed,
            }
        else:
            tensors[key] = value.detach().contiguous()
    metadata = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "dtype": dtype,
        "group_size": str(GROUP), "architecture": ARCHITECTURE, "source_fingerprint": fingerprint,
        "source": source, "matrices": json.dumps(matrices, separators=(",", ":")),
    }
    from safetensors.torch import save as safetensors_save

    return atomic_write_bytes(path, safetensors_save(tensors, metadata), CheckpointError)


# ----------------------------------------------------------------------------- reading


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a model file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: too short to be a model file ({size} bytes)")
            length = int.from_bytes(head, "little")
            if length > _MAX_HEADER_BYTES or 8 + length > size:
                raise CheckpointError(f"{path}: truncated or not a safetensors file (header length {length})")
            raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({_first_line(exc)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except MemoryError:
        raise CheckpointError(f"{path}: corrupt safetensors file (a tensor larger than memory)") from None
    except Exception as exc:  # SafetensorError, ValueError, OSError, …: all mean a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({_first_line(exc)})") from None
    if not tensors:
        raise CheckpointError(f"{path}: the file holds no tensors")
    return tensors


def _quantized_model(path: Path, meta: Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> ModelFile:
    def field(name: str) -> str:
        value = meta.get(name)
        if not isinstance(value, str):
            raise CheckpointError(f"{path}: corrupt header (metadata lacks {name})")
        return value

    version = field("format_version")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer rwkv-tui (model format {version!r}); please upgrade")
    if field("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{path}: unsupported architecture {field('architecture')!r} (expected {ARCHITECTURE})")
    dtype = field("dtype")
    if dtype not in FORMATS:
        raise CheckpointError(f"{path}: unknown quantized format {dtype!r}")
    if field("group_size") != str(GROUP):
        raise CheckpointError(f"{path}: group size {field('group_size')!r} is not supported (only {GROUP})")
    fingerprint = field("source_fingerprint")
    if not _FINGERPRINT.match(fingerprint):
        raise CheckpointError(f"{path}: corrupt header (source_fingerprint {fingerprint[:40]!r})")
    try:
        matrices = json.loads(field("matrices"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt header (matrices: {_first_line(exc)})") from None
    if not isinstance(matrices, dict):
        raise CheckpointError(f"{path}: corrupt header (matrices is not an object)")

    weights: Weights = {}
    used: set[str] = set()
    for key, description in matrices.items():
        weights[key] = _matrix(path, key, description, tensors)
        used.update((key + ".q", key + ".d", key + ".scale"))
    for key, tensor in tensors.items():
        if key in used:
            continue
        if key in weights:
            raise CheckpointError(f"{path}: tensor {key} is stored both plain and quantized")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: tensor {key} has non-float dtype {tensor.dtype}")
        weights[key] = tensor
    return ModelFile(weights, dtype, fingerprint)


def _matrix(path: Path, key: str, description: object, tensors: Mapping[str, torch.Tensor]) -> QuantizedMatrix:
    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: quantized matrix {key[:80]}: {reason}")

    if not isinstance(description, dict):
        raise bad("corrupt description")
    fmt, shape, transposed = description.get("format"), description.get("shape"), description.get("transposed")
    if fmt not in FORMATS:
        raise bad(f"unknown format {str(fmt)[:20]!r}")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1 << 31 for n in shape)):
        raise bad("corrupt shape")
    if not isinstance(transposed, bool):
        raise bad("corrupt layout")
    parts = [tensors.get(key + suffix) for suffix in (".q", ".d", ".scale")]
    if any(part is None for part in parts):
        raise bad("its tensors are missing")
    q, d, scale = parts
    rows, cols = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
    stride = -(-cols // GROUP) * GROUP
    want_q = (rows, stride if fmt == "int8" else stride // 2)
    if q.dtype != _LEVEL_DTYPES[fmt] or tuple(q.shape) != want_q:
        raise bad(f"levels are {q.dtype} {tuple(q.shape)}, expected {_LEVEL_DTYPES[fmt]} {want_q}")
    if d.dtype != torch.float16 or tuple(d.shape) != (rows, stride // GROUP):
        raise bad(f"block scales are {d.dtype} {tuple(d.shape)}, expected float16 {(rows, stride // GROUP)}")
    if scale.dtype != torch.float32 or scale.numel() != 1:
        raise bad("corrupt matrix scale")
    value = float(scale.reshape(()))
    if not (value > 0 and torch.isfinite(scale).all() and torch.isfinite(d).all()):
        raise bad("scales hold NaN, infinite or non-positive values")
    return QuantizedMatrix(fmt, q.contiguous(), d.contiguous(), value, (rows, cols), transposed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def quantized_file_name(source: str | Path, dtype: str) -> Path:
    """Where ``rwkv-tui quantize`` writes by default: beside the source, named after it."""
    source = Path(source).expanduser()
    return source.with_name(f"{source.stem}-{dtype}{SUFFIX}")



def quantize_checkpoint(source: str | Path, dtype: str, out: str | Path | None = None) -> Path:
    """Quantize a checkpoint (``.pth`` or safetensors) once and save it for ``load_model``.

    The result is exactly what loading ``source`` with ``dtype=dtype`` runs, so a later load
    skips the quantization. Returns the path written (default: beside the source).
    """
    from engine.backends.cpu import quantize_weights
    from engine.checkpoint import fingerprint, infer_config
    from engine.quant import shape_view

    source = Path(source).expanduser()
    if dtype not in FORMATS:
        raise CheckpointError(f"cannot quantize to {dtype!r}; use {' or '.join(FORMATS)}")
    loaded = read_weights(source)
    weights, source_fingerprint = loaded.weights, loaded.fingerprint
    infer_config(shape_view(weights), source=str(source))
    if source_fingerprint is None:
        source_fingerprint = fingerprint(weights)
    target = Path(out).expanduser() if out is not None else quantized_file_name(source, dtype)
    if target.resolve() == source.resolve():
        raise CheckpointError(f"{target}: would overwrite the model being quantized; choose another --out")
    quantized = quantize_weights(weights, dtype)
    return save_quantized_model(target, quantized, dtype, source_fingerprint, source=source.name)


def read_weights(path: str | Path) -> ModelFile:
    """Any model file by its first bytes: safetensors (quantized or plain), GGUF (llama.cpp's
    rwkv7, engine/gguf_loader.py) or a PyTorch ``.pth`` checkpoint."""
    path = Path(path).expanduser()
    if is_safetensors(path):
        return read_model_file(path)
    from engine.gguf_loader import is_gguf, read_gguf

    if is_gguf(path):
        model = read_gguf(path)
        return ModelFile(model.weights, model.dtype, None)
    from engine.checkpoint import read_state_dict

    return ModelFile(read_state_dict(path), None, None)
