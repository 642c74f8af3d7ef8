"""RWKV state-tuning files: ``blocks.{i}.att.time_state`` tensors of shape (H, N, N).

State tuning (RWKV-PEFT) trains only the initial WKV state of each layer and saves it as a
``.pth`` dict, or merges it into a model checkpoint. The format has no token-shift vectors, so
an imported state starts with zero token shift, and an exported one drops ours.

Orientation. Our WKV matrices are [head][value][key] (the x070 inference layout). Two
conventions exist for how a time_state file relates to that:

* ``as-stored`` (the default): the file already is [head][value][key]. This is what RWKV-PEFT's
  x070 state tuning produces: its Triton kernel uses the parameter directly as the state with
  rows indexing the value and columns the key, and its FLA path hands
  ``time_state.transpose(1, 2)`` to ``chunk_rwkv7``, whose ``initial_state`` is documented as
  [B, H, K, V] — both mean the stored tensor is [value][key].
* ``transposed``: the file is [head][key][value]. ChatRWKV's chat demo transposes on load, a
  habit from RWKV-5/6 whose inference state was [key][value]; files produced for (or by) code
  that follows that habit need it.

When in doubt, :func:`probe_orientation` measures which reading predicts a sample of the
state's target text better.
"""

from __future__ import annotations

import enum
import io
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from engine.atomic import atomic_write_bytes
from engine.checkpoint import count_layers, read_state_dict
from engine.errors import CheckpointError, StateError
from engine.state import State

_TIME_STATE_KEY = re.compile(r"^blocks\.(\d{1,9})\.att\.time_state$")
_EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Orientation(str, enum.Enum):
    """How the (N, N) matrices of a time_state file map onto our [value][key] layout."""

    AS_STORED = "as-stored"
    TRANSPOSED = "transposed"

    @classmethod
    def parse(cls, value: "str | Orientation") -> "Orientation":
        if isinstance(value, Orientation):
            return value
        text = str(value).strip().lower().replace("_", "-")
        aliases = {"as-stored": cls.AS_STORED, "stored": cls.AS_STORED, "none": cls.AS_STORED,
                   "transposed": cls.TRANSPOSED, "transpose": cls.TRANSPOSED, "t": cls.TRANSPOSED}
        if text not in aliases:
            raise StateError(f"unknown time_state orientation {value!r}; use as-stored or transposed")
        return aliases[text]


#: The orientation RWKV-PEFT's x070 state tuning writes (see the module docstring).
DEFAULT_ORIENTATION = Orientation.AS_STORED


def orient(wkv: torch.Tensor, orientation: "Orientation | str") -> torch.Tensor:
    """Map time_state matrices (…, N, N) to our layout, or back: the mapping is its own inverse."""
    if Orientation.parse(orientation) is Orientation.TRANSPOSED:
        return wkv.transpose(-1, -2).contiguous()
    return wkv.contiguous()


def stack_time_states(tensors: Mapping[str, torch.Tensor], source: str) -> torch.Tensor:
    """The per-layer time_state tensors of a dict, validated and stacked as (L, H, N, N) fp32.

    Other keys are ignored, so this also reads time_state merged into a model checkpoint.
    """
    layers: dict[int, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _TIME_STATE_KEY.match(key)
        if match:
            layers[int(match.group(1))] = tensor
    if not layers:
        raise StateError(f"{source}: no blocks.N.att.time_state tensors (not a state-tuning file)")
    n_layer = count_layers(layers, source, StateError, where=" from the time_state")
    shape = tuple(layers[0].shape)
    if len(shape) != 3 or shape[1] != shape[2] or 0 in shape:
        raise StateError(f"{source}: blocks.0.att.time_state has shape {shape}, expected (heads, N, N)")
    for i in range(n_layer):
        tensor = layers[i]
        if tuple(tensor.shape) != shape:
            raise StateError(
                f"{source}: blocks.{i}.att.time_state has shape {tuple(tensor.shape)}, "
                f"layer 0 has {shape}"
            )
        if not tensor.is_floating_point():
            raise StateError(f"{source}: blocks.{i}.att.time_state has non-float dtype {tensor.dtype}")
    stacked = torch.stack([layers[i].detach().to(torch.float32) for i in range(n_layer)])
    if not torch.isfinite(stacked).all():
        raise StateError(f"{source}: time_state holds NaN or infinite values")
    return stacked


def state_from_time_states(
    stacked: torch.Tensor, orientation: "Orientation | str" = DEFAULT_ORIENTATION
) -> State:
    """A State with these WKV matrices and zero token shift (the format stores none)."""
    n_layer, n_head, head_size, _ = stacked.shape
    n_embd = n_head * head_size
    orientation = Orientation.parse(orientation)
    state = State(
        att_x=torch.zeros(n_layer, n_embd, dtype=torch.float32),
        wkv=orient(stacked.to(torch.float32), orientation),
        ffn_x=torch.zeros(n_layer, n_embd, dtype=torch.float32),
    )
    state.meta["orientation"] = orientation.value
    return state


def read_time_state_file(path: str | Path) -> torch.Tensor:
    """Read a state-tuning file (``.pth`` or safetensors) as stacked (L, H, N, N) fp32, as stored.

    ``.pth`` files are opened with ``weights_only=True``: pickled code is refused, never run.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StateError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        tensors = read_state_dict(path, what="a state-tuning file (.pth or safetensors)")
    except CheckpointError as exc:
        raise StateError(str(exc)) from None
    return stack_time_states(tensors, str(path))


def import_time_state(
    path: str | Path,
    model: Any = None,
    *,
    orientation: "Orientation | str" = DEFAULT_ORIENTATION,
) -> State:
    """Load a state-tuning file as a State; with ``model`` (Model or ModelInfo), check it fits."""
    stacked = read_time_state_file(path)
    if model is not None:
        check_time_state_fits(stacked, model, str(path))
    state = state_from_time_states(stacked, orientation)
    state.meta["imported_from"] = Path(path).name
    return state


def check_time_state_fits(stacked: torch.Tensor, model: Any, source: str) -> None:
    info = getattr(model, "info", model)
    have = tuple(stacked.shape)
    want = (info.n_layer, info.n_head, info.head_size, info.head_size)
    if have != want:
        raise StateError(
            f"{source}: time_state is for {have[0]} layers × {have[1]} heads of {have[2]}; "
            f"{info.name} has {want[0]} layers × {want[1]} heads of {want[2]}"
        )


def token_shift_magnitude(state: State) -> float:
    """Largest token-shift entry: non-zero means exporting to time_state loses information."""
    return float(max(state.att_x.abs().max(), state.ffn_x.abs().max()))


def time_state_dict(
    state: State,
    *,
    orientation: "Orientation | str" = DEFAULT_ORIENTATION,
    dtype: str = "fp32",
) -> dict[str, torch.Tensor]:
    """Our state as a state-tuning dict (WKV only; token-shift vectors are not part of it)."""
    if dtype not in _EXPORT_DTYPES:
        raise StateError(f"unknown dtype {dtype!r} for a time_state file; use fp32, bf16 or fp16")
    wkv = orient(state.wkv.detach().to("cpu", torch.float32), orientation)
    out = {}
    for i in range(wkv.shape[0]):
        tensor = wkv[i].to(_EXPORT_DTYPES[dtype]).clone()
        if not torch.isfinite(tensor).all():
            raise StateError(f"layer {i} of the state does not fit in {dtype}; export as fp32")
        out[f"blocks.{i}.att.time_state"] = tensor
    return out


def export_time_state(
    path: str | Path,
    state: State,
    *,
    orientation: "Orientation | str" = DEFAULT_ORIENTATION,
    dtype: str = "fp32",
) -> Path:
    """Write ``state`` as a state-tuning ``.pth`` file (atomically)."""
    buffer = io.BytesIO()
    torch.save(time_state_dict(state, orientation=orientation, dtype=dtype), buffer)
    return atomic_write_bytes(path, buffer.getvalue(), StateError)


def probe_orientation(
    model: Any, stacked: torch.Tensor, tokens: Sequence[int]
) -> dict[Orientation, float]:
    """Mean negative log-likelihood (nats/token) of ``tokens`` after each orientation.

    A state tuned for a task makes text of that task more likely; the right reading of the
    file therefore scores lower. Needs at least two tokens of representative text.
    """
    ids = [int(t) for t in tokens]
    if len(ids) < 2:
        raise StateError("probing the orientation needs at least two tokens of sample text")
    check_time_state_fits(stacked, model, "time_state")
    target = torch.tensor(ids[1:], dtype=torch.long)
    scores: dict[Orientation, float] = {}
    for orientation in Orientation:
        logits, _ = model.forward_all(ids, state_from_time_states(stacked, orientation))
        log_probs = torch.log_softmax(logits[:-1].double(), dim=-1)
        nll = -log_probs.gather(1, target[:, None]).mean()
        scores[orientation] = float(nll) if math.isfinite(float(nll)) else math.inf
    return scores
