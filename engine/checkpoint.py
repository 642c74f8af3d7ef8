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
from typing import Callable, Iterable, Mapping

import torch

from engine.errors import CheckpointError, first_line
from engine.formats import DESCRIPTIONS, Sniffed, sniff
from engine.quant import QuantizedMatrix

#: Layer numbers have at most 9 digits: a longer one is no layer (and a 5000-digit one would
#: not even convert to an int).
_LAYER_KEY = re.compile(r"^blocks\.(\d{1,9})\.(.+)$")

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


def read_state_dict(path: str | Path, what: str = "a PyTorch checkpoint") -> dict[str, torch.Tensor]:
    """Load a ``.pth`` (or safetensors) file as a name → tensor dict without executing any pickled code.

    ``what`` is what the caller expects the file to be, for the message when it is not.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a model file")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: file is empty")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    sniffed = sniff(path, CheckpointError, what)
    if sniffed.kind == "safetensors":
        obj = _safetensors_load(path)
    elif sniffed.kind not in ("zip", "pickle"):  # the only two forms torch.save writes
        raise CheckpointError(f"{path}: not {what} ({_what_else(sniffed)})")
    else:
        obj = _pth_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict of tensors, found {type(obj).__name__}"
        )
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: expected a dict of named tensors, found entry {str(key)[:80]!r} of type "
                f"{type(value).__name__}"
            )
        state_dict[key] = value
    if not state_dict:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return state_dict


def _pth_load(path: Path) -> object:
    """A ``.pth`` file's object, with every failure as one line (nothing pickled ever runs)."""
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {_unpickling_refusal(exc)}") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint ({first_line(exc)})"
        ) from None
    except Exception as exc:  # torch surfaces many error types for corrupt archives
        raise CheckpointError(f"{path}: unreadable checkpoint ({first_line(exc)})") from None


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    """Weights saved as safetensors (tensors and text only: nothing in it can run)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({first_line(exc)})") from None


def _what_else(sniffed: Sniffed) -> str:
    """What a file that is neither a ``.pth`` nor safetensors is, as far as its start tells."""
    if sniffed.kind is not None:
        return f"it is {DESCRIPTIONS[sniffed.kind]}"
    if sniffed.problem.startswith(("truncated", "corrupt")):
        return f"a damaged safetensors file: {sniffed.problem}"
    shown = " ".join(f"{byte:02x}" for byte in sniffed.head)
    return f"unrecognised content starting with bytes {shown}; a .pth file is a zip archive or a pickle"


def _unpickling_refusal(exc: pickle.UnpicklingError) -> str:
    """Say what the safe unpickler refused: code it was asked to import, or damaged data."""
    text = str(exc)
    wanted = re.search(r"GLOBAL ([\w.]+)", text)
    if wanted:
        return (
            f"refused to load: the file asks for {wanted.group(1)[:80]}, which is not a tensor "
            "(pickled code or objects; nothing was run)"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = detail.group(1).strip()[:200] if detail else first_line(exc)
    return f"damaged or not a plain PyTorch checkpoint ({reason}; nothing was run)"


def _torch_load(path: Path) -> object:
    """``torch.load`` in its safe mode, memory-mapped when the archive format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        # Legacy (pre-zip) pickles cannot be memory-mapped; they still load safely.
        if "mmap" not in str(exc).lower():
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Describe a checkpoint that is not a plain x070 model, or return None if it is one."""
    keys = state_dict.keys()
    for marker, description in _OTHER_ARCHITECTURES:
        if any(key.endswith(marker) for key in keys):
            return description
    if any(key.startswith(("model.layers.", "transformer.h.", "model.decoder.")) for key in keys):
        return "a Hugging Face transformer model, not an RWKV checkpoint"
    missing = [key for key in ("blocks.0.att.r_k", "blocks.0.att.k_k") if key not in keys]
    if missing:
        return f"not an RWKV-7 (x070) checkpoint: {' and '.join(missing)} missing"
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
            raise CheckpointError(f"{source}: unexpected tensor {key[:120]} (not part of an x070 model)")
    n_layer = count_layers(layer_keys, source)

    vocab, n_embd = _shape_of(state_dict, "emb.weight", 2, source)
    n_head, head_size = _shape_of(state_dict, "blocks.0.att.r_k", 2, source)
    value_lora = "blocks.1.att.v1" if n_layer > 1 else "blocks.0.att.v1"
    has_value_lora = value_lora in state_dict or n_layer > 1
    read_from = {
        "F": ("blocks.0.ffn.key.weight", 0), "Dw": ("blocks.0.att.w1", 1), "Da": ("blocks.0.att.a1", 1),
        "Dg": ("blocks.0.att.g1", 1), **({"Dv": (value_lora, 1)} if has_value_lora else {}),
    }
    dims = {"1": 1, "C": n_embd, "V": vocab, "H": n_head, "N": head_size, "Dv": 0}
    for symbol, (key, axis) in read_from.items():
        dims[symbol] = _shape_of(state_dict, key, 2, source)[axis]
    if vocab == 0:
        raise CheckpointError(f"{source}: emb.weight has 0 rows: a model without a vocabulary")
    sources = {"C": "emb.weight", "H": "blocks.0.att.r_k", "N": "blocks.0.att.r_k",
               **{symbol: key for symbol, (key, _) in read_from.items()}}
    for symbol, key in sources.items():
        if dims[symbol] == 0:
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(state_dict[key].shape)}, a zero-sized dimension"
            )
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
            # The value-residual LoRA is optional there, but checked like the others when present.
            expected.update({k: v for k, v in _VALUE_RESIDUAL_SHAPES.items() if k in names})
        for name in names - set(expected):
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


def count_layers(
    numbers: Iterable[int], source: str, error: Callable[[str], Exception] = CheckpointError, where: str = "",
) -> int:
    """The number of layers, which must be numbered 0..n-1 with none missing.

    Bounded by the layers actually present: a single key ``blocks.9999999.…`` costs nothing
    and is reported with the first few missing numbers, not all ten million of them.
    """
    present = sorted(set(numbers))
    if not present:
        raise error(f"{source}: no layers{where}")
    count, highest = len(present), present[-1]
    if highest == count - 1:
        return count
    missing: list[int] = []
    candidate = 0
    for number in present:
        while candidate < number and len(missing) < 8:
            missing.append(candidate)
            candidate += 1
        candidate = number + 1
        if len(missing) >= 8:
            break
    more = ", …" if highest + 1 - count > len(missing) else ""
    listed = ", ".join(str(n) for n in missing)
    raise error(
        f"{source}: layers [{listed}{more}] are missing{where} "
        f"({count} layer{'s' if count != 1 else ''} present, numbered up to {highest})"
    )


def _shape_of(
    state_dict: Mapping[str, torch.Tensor], key: str, rank: int, source: str
) -> tuple[int, ...]:
    """The shape of a tensor the hyper-parameters are read from, after checking its rank."""
    if key not in state_dict:
        raise CheckpointError(f"{source}: missing tensor {key}")
    shape = tuple(state_dict[key].shape)
    if len(shape) != rank:
        raise CheckpointError(
            f"{source}: tensor {key} has shape {shape}, expected {rank} dimension{'s' if rank != 1 else ''}"
        )
    return shape


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


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse weights holding NaN or infinities: such a model loads, then answers NaN forever.

    A tensor's sum is NaN or infinite whenever one of its values is, and summing is one fast
    pass (about 55 ms for a 0.4B bf16 model on 2 cores); only a tensor whose sum is not finite
    gets the exact, slower check, so huge but finite weights are not refused by mistake.
    """
    for key, value in state_dict.items():
        tensor = _stored_values(value)
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if torch.isfinite(tensor.sum()):
            continue
        bad = ~torch.isfinite(tensor)
        if bad.any():
            count = int(bad.sum())
            raise CheckpointError(
                f"{source}: tensor {key} holds NaN or infinite values ({count:,} of {tensor.numel():,})"
            )


def _is_quantized(value: object) -> bool:
    return isinstance(value, QuantizedMatrix)


def _stored_values(value: torch.Tensor | QuantizedMatrix) -> torch.Tensor:
    """The floating-point numbers a weight is stored as: a quantized matrix's scales."""
    if isinstance(value, QuantizedMatrix):
        return torch.cat((value.d.reshape(-1).float(), torch.tensor([value.scale], dtype=torch.float32)))
    return value


#: Elements hashed per tensor by :func:`fingerprint` (evenly spaced over the whole tensor).
FINGERPRINT_SAMPLES = 4096


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short identity for a set of weights, used to match state files to their model.

    Every tensor counts: its name, its shape and an evenly spaced sample of its values, so two
    models that differ only in ``head.weight`` or by a merged LoRA in one matrix are told apart.
    Values are hashed as fp32, so re-saving the same weights in a wider dtype keeps the identity.
    Sampling keeps it fast: about 25 ms for a 0.4B model (an mmapped file is barely touched).
    """
    digest = hashlib.sha256(b"rwkv-tui fingerprint 2;")
    for key in sorted(state_dict):
        value = state_dict[key]
        if _is_quantized(value):
            # A matrix that arrived quantized (a GGUF file's Q8_0/Q4_0 blocks): its codes and
            # scales are the weights. A model quantized from a .pth keeps its source's fingerprint.
            digest.update(f"{key}:{tuple(value.checkpoint_shape)}:{value.format}:{value.scale!r};".encode())
            for part in (value.q, value.d):
                flat = part.reshape(-1)
                if flat.numel() > FINGERPRINT_SAMPLES:
                    flat = flat[:: flat.numel() // FINGERPRINT_SAMPLES][:FINGERPRINT_SAMPLES]
                digest.update(flat.contiguous().numpy().tobytes())
            continue
        tensor = value.detach()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        flat = tensor.reshape(-1)
        if flat.numel() > FINGERPRINT_SAMPLES:
            flat = flat[:: flat.numel() // FINGERPRINT_SAMPLES][:FINGERPRINT_SAMPLES]
        digest.update(flat.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def legacy_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The fingerprint earlier rwkv-tui versions wrote (shapes and a few small tensors only).

    Kept so state files and autosaves written by those versions still find their model; it
    cannot tell apart weights that differ only in the big matrices, so new files never use it.
    """
    if any(_is_quantized(value) for value in state_dict.values()):
        return ""  # no earlier version read quantized weights, so no older file can name them
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
