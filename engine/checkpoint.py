"""Reading RWKV-7 ("x070") checkpoints safely and inferring their shape.

Checkpoints are pickles, so they are only ever opened with ``weights_only=True``: a file that
tries to run code is refused, never executed. Hyper-parameters are read from tensor shapes
rather than trusted from file names, because released models use LoRA ranks that no formula
predicts.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from engine.errors import CheckpointError

_LAYER_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")

#: Per-layer parameters of an x070 block, with the shape each must have.
#: Symbols: C = n_embd, H = n_head, N = head_size, F = ffn width, Dw/Da/Dv/Dg = LoRA ranks.
_LAYER_SHAPES: dict[str, tuple[str, ...]] = {
    "ln1.weight": ("C",), "ln1.bias": ("C",), "ln2.weight": ("C",), "ln2.bias": ("C",),
    "att.x_r": ("1", "1", "C"), "att.x_w": ("1", "1", "C"), "att.x_k": ("1", "1", "C"),
    "att.x_v": ("1", "1", "C"), "att.x_a": ("1", "1", "C"), "att.x_g": ("1", "1", "C"),
    "att.w0": ("1", "1", "C"), "att.w1": ("C", "Dw"), "att.w2": ("Dw", "C"),
    "att.a0": ("1", "1", "C"), "att.a1": ("C", "Da"), "att.a2": ("Da", "C"),
    "att.g1": ("C", "Dg"), "att.g2": ("Dg", "C"),
    "att.k_k": ("1", "1", "C"), "att.k_a": ("1", "1", "C"), "att.r_k": ("H", "N"),
    "att.receptance.weight": ("C", "C"), "att.key.weight": ("C", "C"),
    "att.value.weight": ("C", "C"), "att.output.weight": ("C", "C"),
    "att.ln_x.weight": ("C",), "att.ln_x.bias": ("C",),
    "ffn.x_k": ("1", "1", "C"), "ffn.key.weight": ("F", "C"), "ffn.value.weight": ("C", "F"),
}
#: The value-residual LoRA exists for every layer but is only used from layer 1 on;
#: layer 0's copy is optional (many files omit it).
_VALUE_RESIDUAL_SHAPES: dict[str, tuple[str, ...]] = {
    "att.v0": ("1", "1", "C"), "att.v1": ("C", "Dv"), "att.v2": ("Dv", "C"),
}
#: State-tuned files merged into a model carry an initial WKV state per layer.
_TIME_STATE = "att.time_state"

_GLOBAL_SHAPES: dict[str, tuple[str, ...]] = {
    "emb.weight": ("V", "C"),
    "blocks.0.ln0.weight": ("C",), "blocks.0.ln0.bias": ("C",),
    "ln_out.weight": ("C",), "ln_out.bias": ("C",),
    "head.weight": ("V", "C"),
}

#: Marker keys of other architectures, so a refusal can say what the file really is.
_OTHER_ARCHITECTURES: tuple[tuple[str, str], ...] = (
    ("ffn.s_emb.weight", "an RWKV-7 DeepEmbed (rwkv7a) model"),
    ("ffn.s_emb_x.weight", "an RWKV-7 DeepEmbed (rwkv7a) model"),
    ("att.time_maa_x", "an RWKV-6 (x060) model"),
    ("att.time_faaaa", "an RWKV-5 (x052) model"),
    ("att.time_first", "an RWKV-4 model"),
    ("att.time_decay", "an RWKV-4/5/6 model"),
)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an x070 model, inferred from its tensors."""

    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab: int
    ffn_dim: int
    decay_rank: int
    iclr_rank: int
    value_rank: int
    gate_rank: int
    has_time_state: bool = False

    @property
    def state_bytes(self) -> int:
        """Bytes of one fp32 state (token-shift vectors plus WKV matrices)."""
        per_layer = 2 * self.n_embd + self.n_head * self.head_size * self.head_size
        return 4 * self.n_layer * per_layer


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` file as a name → tensor dict without executing any pickled code."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a model file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        reason = _first_line(exc)
        if "weights only" in reason.lower() or "unsupported global" in reason.lower():
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled code or objects, "
                "not plain tensors"
            ) from None
        raise CheckpointError(f"{path}: not a valid PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint ({_first_line(exc)})"
        ) from None
    except Exception as exc:  # torch surfaces many error types for corrupt archives
        raise CheckpointError(f"{path}: unreadable checkpoint ({_first_line(exc)})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict of tensors, found {type(obj).__name__}"
        )
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: expected a dict of named tensors, found entry {key!r} of type "
                f"{type(value).__name__}"
            )
        state_dict[key] = value
    if not state_dict:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return state_dict


def _torch_load(path: Path) -> object:
    """``torch.load`` in its safe mode, memory-mapped when the archive format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        # Legacy (pre-zip) pickles cannot be memory-mapped; they still load safely.
        if "mmap" not in str(exc).lower():
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Describe a checkpoint that is not a plain x070 model, or return None if it is one."""
    keys = state_dict.keys()
    for marker, description in _OTHER_ARCHITECTURES:
        if any(key.endswith(marker) for key in keys):
            return description
    if any(key.startswith(("model.layers.", "transformer.h.", "model.decoder.")) for key in keys):
        return "a Hugging Face transformer model, not an RWKV checkpoint"
    if "blocks.0.att.r_k" not in keys or "blocks.0.att.k_k" not in keys:
        return "not an RWKV-7 (x070) checkpoint: blocks.0.att.r_k / k_k are missing"
    return None


def infer_config(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """Validate an x070 state dict and read its hyper-parameters from tensor shapes."""
    found = detect_architecture(state_dict)
    if found is not None:
        raise CheckpointError(f"{source}: unsupported model: {found}")
    for key in _GLOBAL_SHAPES:
        if key not in state_dict:
            raise CheckpointError(f"{source}: missing tensor {key}")

    layer_keys: dict[int, set[str]] = {}
    for key in state_dict:
        match = _LAYER_KEY.match(key)
        if match:
            layer_keys.setdefault(int(match.group(1)), set()).add(match.group(2))
        elif key not in _GLOBAL_SHAPES:
            raise CheckpointError(f"{source}: unexpected tensor {key} (not part of an x070 model)")
    n_layer = max(layer_keys) + 1
    if sorted(layer_keys) != list(range(n_layer)):
        missing = sorted(set(range(n_layer)) - set(layer_keys))
        raise CheckpointError(f"{source}: layers {missing} are missing")

    vocab, n_embd = state_dict["emb.weight"].shape
    n_head, head_size = state_dict["blocks.0.att.r_k"].shape
    dims = {
        "1": 1, "C": n_embd, "V": vocab, "H": n_head, "N": head_size,
        "F": state_dict["blocks.0.ffn.key.weight"].shape[0],
        "Dw": state_dict["blocks.0.att.w1"].shape[1],
        "Da": state_dict["blocks.0.att.a1"].shape[1],
        "Dg": state_dict["blocks.0.att.g1"].shape[1],
        "Dv": state_dict["blocks.1.att.v1"].shape[1] if n_layer > 1 else 0,
    }
    if n_head * head_size != n_embd:
        raise CheckpointError(
            f"{source}: n_head × head_size = {n_head}×{head_size} does not equal n_embd {n_embd}"
        )

    has_time_state = False
    for layer, names in layer_keys.items():
        expected = dict(_LAYER_SHAPES)
        if layer > 0:
            expected.update(_VALUE_RESIDUAL_SHAPES)
        if layer == 0:
            expected["ln0.weight"] = ("C",)
            expected["ln0.bias"] = ("C",)
        optional = set(_VALUE_RESIDUAL_SHAPES) if layer == 0 else set()
        for name in names - set(expected) - optional:
            if name == _TIME_STATE:
                has_time_state = True
                _check_shape(state_dict, f"blocks.{layer}.{name}", ("H", "N", "N"), dims, source)
                continue
            raise CheckpointError(f"{source}: unexpected tensor blocks.{layer}.{name}")
        for name, shape in expected.items():
            _check_shape(state_dict, f"blocks.{layer}.{name}", shape, dims, source)
    for key, shape in _GLOBAL_SHAPES.items():
        _check_shape(state_dict, key, shape, dims, source)
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: tensor {key} has non-float dtype {tensor.dtype}")

    return ModelConfig(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, head_size=head_size, vocab=vocab,
        ffn_dim=dims["F"], decay_rank=dims["Dw"], iclr_rank=dims["Da"],
        value_rank=dims["Dv"], gate_rank=dims["Dg"], has_time_state=has_time_state,
    )


def _check_shape(
    state_dict: Mapping[str, torch.Tensor],
    key: str,
    symbols: tuple[str, ...],
    dims: Mapping[str, int],
    source: str,
) -> None:
    if key not in state_dict:
        raise CheckpointError(f"{source}: missing tensor {key}")
    want = tuple(dims[s] for s in symbols)
    got = tuple(state_dict[key].shape)
    if got != want:
        raise CheckpointError(f"{source}: tensor {key} has shape {got}, expected {want}")


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short identity for a set of weights, used to match state files to their model.

    Shapes alone would confuse two fine-tunes of the same base model, so a few small tensors
    that training always changes are hashed too. Reading them touches only kilobytes of an
    mmapped multi-GB file.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(f"{key}:{tuple(state_dict[key].shape)};".encode())
    for key in ("blocks.0.att.r_k", "blocks.0.att.k_k", "ln_out.weight", "ln_out.bias"):
        tensor = state_dict.get(key)
        if tensor is not None:
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    emb = state_dict["emb.weight"]
    digest.update(emb[:4].detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
