"""The public model API: ``load_model`` and ``Model``.

A Model is immutable once loaded; all mutable memory lives in ``State`` values, so one model
can serve a chat and a music piece at once, and any state can be kept, compared or rolled back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import torch

from engine.checkpoint import ModelConfig, check_finite, fingerprint, infer_config, legacy_fingerprint
from engine.errors import BackendError, EngineError, StateError
from engine.quant import FORMATS as _QUANTIZED, dense_weights, is_quantized_format, shape_view
from engine.state import State

log = logging.getLogger(__name__)

#: Tokens per forward call when prefilling: bounds activation memory, does not change results.
DEFAULT_CHUNK_LEN = 256

_DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    **{name: name for name in _QUANTIZED},
}
_DTYPE_CHOICES = "fp32, bf16, fp16, int8 or q4"
_SHORT_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class Backend(Protocol):
    """What a compute backend provides to ``Model``."""

    device: torch.device
    weight_dtype: torch.dtype | str

    def forward(
        self, tokens: Sequence[int], state: State, all_logits: bool = False
    ) -> tuple[torch.Tensor, State]: ...


@dataclass(frozen=True)
class ModelInfo:
    """What the UI shows about a loaded model."""

    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab: int
    dtype: str
    device: str
    ffn_dim: int
    n_params: int
    path: str
    fingerprint: str
    state_bytes: int
    kernels: str
    #: One line for the UI when the model runs somewhere else than asked or hoped for
    #: (device="auto" without a usable CUDA setup); empty otherwise.
    device_note: str = ""
    #: The fingerprint earlier versions gave these weights (``checkpoint.legacy_fingerprint``),
    #: so their state files and autosaves still find this model; empty when unknown.
    legacy_fingerprint: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).stem


class Model:
    """An RWKV-7 model ready to run. Create with :func:`load_model`."""

    def __init__(
        self,
        backend: Backend,
        config: ModelConfig,
        info: ModelInfo,
        chunk_len: int = DEFAULT_CHUNK_LEN,
        bundled_state: State | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.info = info
        self.chunk_len = chunk_len
        #: Initial state shipped inside a state-tuned checkpoint (``att.time_state``), if any.
        self.bundled_state = bundled_state

    def zero_state(self) -> State:
        """The empty state every conversation starts from."""
        return State.zeros(self.config)

    def forward(self, tokens: Sequence[int], state: State | None = None) -> tuple[torch.Tensor, State]:
        """Feed ``tokens``; return float32 CPU logits of the last token (shape [vocab]) and the new state.

        The state passed in is never modified.
        """
        logits, new_state = self._run(tokens, state, all_logits=False)
        return logits, new_state

    def forward_all(self, tokens: Sequence[int], state: State | None = None) -> tuple[torch.Tensor, State]:
        """Like :meth:`forward`, but logits for every token: shape [len(tokens), vocab]."""
        return self._run(tokens, state, all_logits=True)

    def _run(
        self, tokens: Sequence[int], state: State | None, all_logits: bool
    ) -> tuple[torch.Tensor, State]:
        tokens = self._check_tokens(tokens)
        if state is None:
            state = self.zero_state()
        else:
            state.check_compatible(self.config)
        state = state.to(self.backend.device)
        pieces: list[torch.Tensor] = []
        for start in range(0, len(tokens), self.chunk_len):
            logits, state = self.backend.forward(tokens[start:start + self.chunk_len], state, all_logits)
            pieces.append(logits)
        out = torch.cat(pieces) if all_logits else pieces[-1]
        return out.float().cpu(), state

    def _check_tokens(self, tokens: Sequence[int]) -> list[int]:
        ids = [int(t) for t in tokens]
        if not ids:
            raise EngineError("forward needs at least one token")
        vocab = self.config.vocab
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise EngineError(f"token id {bad} is outside this model's vocabulary (0..{vocab - 1})")
        return ids


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """Accept 'fp32'/'bf16'/'fp16' (and long names), the quantized 'int8'/'q4' (returned as
    those names) or a torch dtype; None means the device default."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and dtype not in _SHORT_NAMES:
            raise EngineError(f"unsupported dtype {dtype}; use {_DTYPE_CHOICES}")
        return dtype
    key = str(dtype).lower().strip()
    if key in ("auto", "none", ""):
        return None
    if key not in _DTYPE_NAMES:
        raise EngineError(f"unknown dtype {dtype!r}; use {_DTYPE_CHOICES}")
    return _DTYPE_NAMES[key]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU, else the CPU; 'cuda' without one is an error."""
    name = str(device).lower().strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise EngineError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type not in ("cpu", "cuda"):
        raise EngineError(f"unsupported device {device!r}; use auto, cpu or cuda")
    if resolved.type == "cuda":
        from engine.backends.cuda_build import gpu_problem

        problem = gpu_problem()
        if problem:
            raise BackendError(f"CUDA backend unavailable: {problem}")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise BackendError(
                f"CUDA backend unavailable: no GPU {resolved.index} "
                f"(torch sees {torch.cuda.device_count()})"
            )
    return resolved


def build_model(
    state_dict: Mapping[str, torch.Tensor],
    *,
    path: str = "<memory>",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    chunk_len: int = DEFAULT_CHUNK_LEN,
    source_fingerprint: str | None = None,
) -> Model:
    """Make a Model from an already-loaded state dict (used by ``load_model`` and training).

    The state dict may hold quantized matrices (a quantized model file); ``source_fingerprint``
    is then the fingerprint of the weights they were made from.
    """
    config = infer_config(shape_view(state_dict), source=path)
    check_finite(state_dict, source=path)
    weight_dtype = parse_dtype(dtype)
    backend, device_note = _choose_backend(state_dict, config, device, weight_dtype)
    bundled = _bundled_state(state_dict, config, path)
    kernels = getattr(getattr(backend, "kernels", None), "name", "cuda")
    info = ModelInfo(
        n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head,
        head_size=config.head_size, vocab=config.vocab,
        dtype=short_dtype_name(backend.weight_dtype), device=str(backend.device),
        ffn_dim=config.ffn_dim,
        n_params=sum(t.numel() for t in state_dict.values()),
        path=path, fingerprint=source_fingerprint or fingerprint(state_dict), state_bytes=config.state_bytes,
        kernels=kernels, device_note=device_note, legacy_fingerprint=legacy_fingerprint(state_dict),
    )
    return Model(backend, config, info, chunk_len=chunk_len, bundled_state=bundled)


def load_model(
    path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
) -> Model:
    """Load an RWKV-7 x070 ``.pth`` checkpoint safely (no pickled code runs), a safetensors
    model file (engine/model_file.py: a quantized model, or a plain checkpoint's tensors) or a
    llama.cpp ``rwkv7`` GGUF file (engine/gguf_loader.py).

    ``dtype`` is the weight storage type (None: bf16 on CPU, fp16 on CUDA, or a quantized or GGUF
    file's own format); CPU activations and the state are always fp32.
    """
    path = Path(path).expanduser()
    from engine.model_file import read_weights

    # a .pth; a quantized model saved by `rwkv-tui quantize` or plain safetensors; a GGUF file
    loaded = read_weights(path)
    if loaded.dtype is not None and parse_dtype(dtype) is None:
        dtype = loaded.dtype  # the file's own format
    return build_model(
        loaded.weights, path=str(path), device=device, dtype=dtype, source_fingerprint=loaded.fingerprint,
    )


def _bundled_state(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig, source: str = "checkpoint"
) -> State | None:
    """The initial state merged into a state-tuned checkpoint, read like a time_state file.

    Uses the default orientation of ``engine.time_state`` (as stored); a user who knows the
    file needs the other one can re-orient it with ``engine.time_state.orient``.
    """
    if not config.has_time_state:
        return None
    from engine.time_state import DEFAULT_ORIENTATION, stack_time_states, state_from_time_states

    stacked = stack_time_states(state_dict, source)
    if stacked.shape[0] != config.n_layer:
        raise StateError(
            f"{source}: time_state covers {stacked.shape[0]} of the model's {config.n_layer} layers"
        )
    state = state_from_time_states(stacked, DEFAULT_ORIENTATION)
    state.meta["source"] = "time_state bundled in checkpoint"
    return state


def _choose_backend(
    state_dict: Mapping[str, torch.Tensor],
    config: ModelConfig,
    device: str | torch.device,
    weight_dtype: torch.dtype | str | None,
) -> tuple[Backend, str]:
    """The backend for ``device`` and, when 'auto' could not use CUDA, the one-line reason.

    An explicit 'cuda' fails loudly (BackendError); 'auto' never fails for want of CUDA: it
    says why in one line (log warning + ModelInfo.device_note) and runs on the CPU.
    """
    auto = str(device).lower().strip() == "auto"
    target = resolve_device(device)
    note = ""
    if target.type == "cuda" and is_quantized_format(weight_dtype):
        message = f"{weight_dtype} weights run on the CPU only (use fp16 or bf16 on the GPU)"
        if not auto:
            raise BackendError(f"CUDA backend unavailable: {message}")
        note = f"{message}; running on the CPU"
        _log_once(logging.INFO, note)
    elif target.type == "cuda":
        try:
            return _cuda_backend(dense_weights(state_dict), config, weight_dtype or torch.float16, target), ""
        except BackendError as exc:
            if not auto:
                raise
            note = f"{exc}; running on the CPU"
            _log_once(logging.WARNING, note)  # a GPU is there but unusable: worth a warning
    elif auto:
        from engine.backends.cuda_build import gpu_problem

        note = f"CUDA backend unavailable: {gpu_problem() or 'no CUDA GPU found'}; running on the CPU"
        _log_once(logging.INFO, note)  # the normal case on a machine without a GPU
    from engine.backends.cpu import CpuBackend

    return CpuBackend(state_dict, config, weight_dtype or torch.bfloat16), note


_logged: set[str] = set()


def _log_once(level: int, message: str) -> None:
    """Log a fallback once per process, not on every model load."""
    if message not in _logged:
        _logged.add(message)
        log.log(level, "%s", message)


def _cuda_backend(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig, dtype: torch.dtype, device: torch.device
) -> Backend:
    """Build the CUDA backend; every failure becomes one BackendError line."""
    try:
        from engine.backends.cuda import CudaBackend

        return CudaBackend(state_dict, config, dtype, device)
    except BackendError as exc:
        message = str(exc)
        if not message.startswith("CUDA backend"):
            message = f"CUDA backend unavailable: {message}"
        raise BackendError(message) from None
    except torch.cuda.OutOfMemoryError:
        raise BackendError(
            f"CUDA backend unavailable: the model does not fit in GPU memory "
            f"({torch.cuda.get_device_name(device)})"
        ) from None
    except (ImportError, RuntimeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BackendError(f"CUDA backend failed: {first}") from None


def short_dtype_name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else _SHORT_NAMES[dtype]
