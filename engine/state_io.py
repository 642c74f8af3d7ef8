"""rwkv-tui state files: a model's RNN state as safetensors, with what it belongs to.

A state is only meaningful with the weights that produced it, so the file records the model's
fingerprint and shapes next to the tensors, plus how it came about (tokens consumed, optional
token history and transcript). safetensors holds no code, so opening a hostile file cannot
run anything; on top of that the header is checked by hand *before* any tensor is read, so a
truncated, oversized or mismatched file is refused with one line and without allocating what
it claims, and the caller's current state is never touched.

Layout (all tensors little-endian, C-contiguous):

=====================  ==============================  =====================================
name                   shape / dtype                   meaning
=====================  ==============================  =====================================
``att_x``              (L, C) F32 | F16 | BF16         time-mix token-shift vectors
``wkv``                (L, H, N, N) same dtype         WKV matrices, [head][value][key]
``ffn_x``              (L, C) same dtype               channel-mix token-shift vectors
``tokens``             (T,) I32, optional              token history that produced the state
``logits``             (V,) F32, optional              logits that follow the state
``snapshot.K.<part>``  as above, optional              earlier states of a saved conversation
=====================  ==============================  =====================================

``__metadata__`` (strings, as safetensors requires): ``format`` = ``rwkv-tui-state``,
``format_version``, ``kind`` (``state`` or ``session``), ``fingerprint`` (empty when the
state is not bound to particular weights, e.g. converted from a state-tuning file),
``model_name``, ``n_layer``, ``n_embd``, ``n_head``, ``head_size``, ``vocab``, ``dtype``,
``wkv_layout``, ``tokens_seen``, ``created`` (ISO 8601, UTC), ``app_version``, ``meta``
(JSON object), optionally ``transcript`` (JSON object), and since this version
``fingerprint_scheme`` (which ``engine.checkpoint`` fingerprint the file records: 2; files without
it have the earlier scheme 1) and ``checksum`` (``crc32:`` and 8 hex digits over every tensor's
name and bytes, in name order, then the transcript's UTF-8 text), so a flipped bit is refused
instead of continuing a conversation from damaged numbers. Files without a checksum still load.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from engine.atomic import PRIVATE, atomic_write_bytes
from engine.errors import StateError, StateModelMismatchError, first_line
from engine.formats import DESCRIPTIONS, MAX_HEADER_BYTES, sniff
from engine.state import State

FORMAT = "rwkv-tui-state"
FORMAT_VERSION = 1
#: Suggested file name ending: says what the file is, and safetensors tools still open it.
SUFFIX = ".state.safetensors"
WKV_LAYOUT = "head,value,key"
KINDS = ("state", "session")
#: The fingerprint scheme new files record: 2 is ``checkpoint.fingerprint`` (a sample of every
#: tensor); 1, implied by files without the field, is ``checkpoint.legacy_fingerprint``.
FINGERPRINT_SCHEME = 2
_CHECKSUM = re.compile(r"crc32:[0-9a-f]{8}")

#: Plausibility bounds, so a hostile header cannot make us compute absurd sizes.
_MAX_DIM = {"n_layer": 4096, "n_embd": 1 << 20, "n_head": 1 << 16, "head_size": 4096}
_MAX_VOCAB = 1 << 24
_MAX_TOKENS = 1 << 31

_STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SAFETENSORS_DTYPE = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}
_STATE_PARTS = ("att_x", "wkv", "ffn_x")
_SNAPSHOT_NAME = re.compile(r"^snapshot\.(\d{1,6})\.(att_x|wkv|ffn_x|logits)$")
_REQUIRED_META = (
    "format_version", "kind", "fingerprint", "n_layer", "n_embd", "n_head", "head_size",
    "dtype", "tokens_seen",
)


@dataclass(frozen=True)
class StateFileInfo:
    """What a state file says about itself, read from its header alone."""

    path: str
    format_version: int
    kind: str
    #: Fingerprint of the weights the state came from; "" when not bound to a model.
    fingerprint: str
    model_name: str
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    #: Vocabulary of the model, 0 when unknown.
    vocab: int
    #: Storage dtype of the state tensors ('fp32', 'fp16', 'bf16'); loading always gives fp32.
    dtype: str
    tokens_seen: int
    created: str
    app_version: str
    meta: dict[str, str]
    file_bytes: int
    #: Number of tokens in the stored token history (0: none stored).
    history_tokens: int
    has_logits: bool
    has_transcript: bool
    #: Indices of the conversation snapshots stored in a session file.
    snapshots: tuple[int, ...] = ()
    #: Which fingerprint the file records (see FINGERPRINT_SCHEME).
    fingerprint_scheme: int = FINGERPRINT_SCHEME
    #: ``crc32:…`` of the tensor data and transcript; "" in files of earlier versions.
    checksum: str = ""

    @property
    def state_bytes(self) -> int:
        """Bytes of the state once loaded (fp32), like ``State.nbytes``."""
        return 4 * self.n_layer * (2 * self.n_embd + self.n_head * self.head_size * self.head_size)

    @property
    def bound_to_model(self) -> bool:
        return bool(self.fingerprint)

    @property
    def name(self) -> str:
        """Name of the model the state was saved from; lets an info stand in for a ModelInfo
        when re-saving (``save_state(path, state, info)`` keeps the binding)."""
        return self.model_name

    def shape_text(self) -> str:
        return (
            f"{self.n_layer} layers × {self.n_embd} ({self.n_head} heads of {self.head_size})"
        )


@dataclass
class StateFile:
    """A loaded state file: the state plus everything stored with it."""

    info: StateFileInfo
    state: State
    tokens: list[int] | None = None
    logits: torch.Tensor | None = None
    transcript: dict[str, Any] | None = None
    #: Conversation snapshots: index → (state, logits or None).
    snapshots: dict[int, tuple[State, torch.Tensor | None]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- saving


def save_state(
    path: str | Path,
    state: State,
    model: Any = None,
    *,
    tokens: Sequence[int] | None = None,
    logits: torch.Tensor | None = None,
    transcript: Mapping[str, Any] | None = None,
    snapshots: Mapping[int, tuple[State, torch.Tensor | None]] | None = None,
    kind: str = "state",
    dtype: str = "fp32",
) -> Path:
    """Write ``state`` (and what goes with it) to ``path`` atomically; return the path.

    ``model`` (a Model or ModelInfo) binds the file to those weights; without it the file
    records only the shapes, and loads into any model of that shape. ``dtype`` 'fp16' or
    'bf16' halves the file but is lossy: continuing from it is no longer bit-exact.
    """
    path = Path(path).expanduser()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if dtype not in _STORAGE_DTYPES:
        raise StateError(f"unknown state file dtype {dtype!r}; use fp32, fp16 or bf16")
    info = getattr(model, "info", model)
    n_layer, n_head, head_size = state.wkv.shape[0], state.wkv.shape[1], state.wkv.shape[2]
    n_embd = state.att_x.shape[1]
    if info is not None:
        want = (info.n_layer, info.n_embd, info.n_head, info.head_size)
        if (n_layer, n_embd, n_head, head_size) != want:
            raise StateError(
                f"cannot save {path}: the state ({n_layer} layers × {n_embd}) does not belong to "
                f"model {info.name} ({info.n_layer} layers × {info.n_embd})"
            )
    vocab = int(getattr(info, "vocab", 0) or 0)

    store = _STORAGE_DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in _state_tensors(state, store, path).items():
        tensors[name] = tensor
    if tokens is not None:
        tensors["tokens"] = torch.tensor(list(tokens), dtype=torch.int32)
    if logits is not None:
        tensors["logits"] = _logits_tensor(logits, vocab, path)
    for index, (snap_state, snap_logits) in (snapshots or {}).items():
        if snap_state.wkv.shape != state.wkv.shape or snap_state.att_x.shape != state.att_x.shape:
            raise StateError(f"cannot save {path}: snapshot {index} has a different shape")
        for part, tensor in _state_tensors(snap_state, store, path).items():
            tensors[f"snapshot.{int(index)}.{part}"] = tensor
        if snap_logits is not None:
            tensors[f"snapshot.{int(index)}.logits"] = _logits_tensor(snap_logits, vocab, path)

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "fingerprint": getattr(info, "fingerprint", "") or "",
        "model_name": getattr(info, "name", "") or "",
        "n_layer": str(n_layer), "n_embd": str(n_embd),
        "n_head": str(n_head), "head_size": str(head_size),
        "vocab": str(vocab),
        "dtype": dtype,
        "wkv_layout": WKV_LAYOUT,
        "tokens_seen": str(int(state.tokens_seen)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "app_version": app_version(),
        "meta": json.dumps({str(k): str(v) for k, v in state.meta.items()}, ensure_ascii=False),
    }
    if metadata["fingerprint"]:
        metadata["fingerprint_scheme"] = str(getattr(info, "fingerprint_scheme", FINGERPRINT_SCHEME))
    if transcript is not None:
        metadata["transcript"] = json.dumps(transcript, ensure_ascii=False)
    metadata["checksum"] = _checksum(tensors, metadata.get("transcript"))

    from safetensors.torch import save as safetensors_save

    data = safetensors_save(tensors, metadata)
    header_len = int.from_bytes(data[:8], "little")
    if header_len > MAX_HEADER_BYTES:
        raise StateError(
            f"cannot save {path}: the transcript is too large for a state file "
            f"({header_len >> 20} MB of metadata, limit {MAX_HEADER_BYTES >> 20} MB)"
        )
    # Private like the conversation it may hold: a new file is readable by the user alone.
    return atomic_write_bytes(path, data, StateError, new_file_mode=PRIVATE)


def _checksum(tensors: Mapping[str, torch.Tensor], transcript: str | None) -> str:
    """CRC-32 over every tensor's name and bytes (in name order), then the transcript: it
    catches any flipped bit, costs about 0.4 s per GB, and does not depend on the file layout."""
    crc = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().reshape(-1)
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(memoryview(tensor.view(torch.uint8).numpy()), crc)
    if transcript is not None:
        crc = zlib.crc32(transcript.encode("utf-8"), crc)
    return f"crc32:{crc:08x}"


def _state_tensors(state: State, store: torch.dtype, path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for part in _STATE_PARTS:
        tensor = getattr(state, part).detach()
        if not torch.isfinite(tensor).all():
            raise StateError(f"cannot save {path}: the state holds NaN or infinite values in {part}")
        stored = tensor.to(device="cpu", dtype=store).contiguous()
        if store != torch.float32 and not torch.isfinite(stored).all():
            raise StateError(
                f"cannot save {path}: {part} has values beyond the range of the chosen dtype; "
                "save as fp32 or bf16"
            )
        out[part] = stored
    return out


def _logits_tensor(logits: torch.Tensor, vocab: int, path: Path) -> torch.Tensor:
    tensor = logits.detach().to(device="cpu", dtype=torch.float32).reshape(-1).contiguous()
    if vocab and tensor.numel() != vocab:
        raise StateError(f"cannot save {path}: logits have {tensor.numel()} entries, vocab is {vocab}")
    return tensor


def app_version() -> str:
    """rwkv-tui's version as installed (or 'unknown' when run from a bare source tree)."""
    from importlib import metadata

    try:
        return metadata.version("rwkv-tui")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------- loading


def read_state_info(path: str | Path) -> StateFileInfo:
    """Validate a state file's header and describe it, without reading any tensor data."""
    path = Path(path).expanduser()
    header, header_len, size = _read_header(path)
    return _info_from_header(path, header, header_len, size)


def is_state_file(path: str | Path) -> bool:
    """Whether ``path`` claims to be an rwkv-tui state file (by its header).

    False for PyTorch archives, pickles and safetensors files of other kinds (e.g. state-tuning
    files); StateError (and nothing else) for a missing or unreadable file, or one too damaged
    to tell.
    """
    path = Path(path).expanduser()
    _check_is_file(path)
    sniffed = sniff(path, StateError, "an rwkv-tui state file")
    if sniffed.header is None:
        if sniffed.kind is not None:
            return False
        raise StateError(f"{path}: {sniffed.problem}")
    meta = sniffed.header.get("__metadata__")
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def read_transcript(path: str | Path) -> dict[str, Any] | None:
    """The transcript stored in a state file's header (None if it has none); no tensor is read."""
    path = Path(path).expanduser()
    header, header_len, size = _read_header(path)
    _info_from_header(path, header, header_len, size)
    return _transcript_from(path, header)


def load_state_file(
    path: str | Path, model: Any = None, *, allow_other_model: bool = False
) -> StateFile:
    """Load and fully validate a state file.

    With ``model`` (a Model or ModelInfo), the file must have the model's shapes, else
    StateError; and it must come from the same weights (fingerprint), else
    StateModelMismatchError — unless ``allow_other_model`` is true. Both checks happen before
    any tensor data is read. Nothing outside the returned object is modified.
    """
    path = Path(path).expanduser()
    header, header_len, size = _read_header(path)
    info = _info_from_header(path, header, header_len, size)
    if model is not None:
        check_fits(info, model, allow_other_model=allow_other_model)

    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    try:
        with path.open("rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) != size:
        raise StateError(f"{path}: the file changed while it was being read")
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise StateError(f"{path}: corrupt safetensors data ({first_line(exc)})") from None
    if info.checksum:
        found = _checksum(tensors, header["__metadata__"].get("transcript"))
        if found != info.checksum:
            raise StateError(
                f"{path}: damaged: the data does not match its checksum ({info.checksum}, found {found})"
            )

    def state_from(prefix: str) -> State:
        parts = {}
        for part in _STATE_PARTS:
            tensor = tensors[prefix + part].to(torch.float32)
            if not torch.isfinite(tensor).all():
                raise StateError(f"{path}: {prefix}{part} holds NaN or infinite values")
            parts[part] = tensor.contiguous()
        return State(**parts)

    state = state_from("")
    state.tokens_seen = info.tokens_seen
    state.meta = dict(info.meta)

    tokens = None
    if "tokens" in tensors:
        tokens = [int(t) for t in tensors["tokens"].tolist()]
        limit = info.vocab or _MAX_VOCAB
        bad = next((t for t in tokens if not 0 <= t < limit), None)
        if bad is not None:
            raise StateError(f"{path}: token history holds id {bad}, outside the vocabulary (0..{limit - 1})")

    def logits_from(name: str) -> torch.Tensor | None:
        if name not in tensors:
            return None
        tensor = tensors[name].to(torch.float32)
        if torch.isnan(tensor).any() or torch.isposinf(tensor).any():
            # -inf is legitimate (banned tokens); NaN and +inf never are.
            raise StateError(f"{path}: {name} holds NaN or +infinite values")
        return tensor

    snapshots: dict[int, tuple[State, torch.Tensor | None]] = {}
    for index in info.snapshots:
        snapshots[index] = (state_from(f"snapshot.{index}."), logits_from(f"snapshot.{index}.logits"))

    return StateFile(
        info=info, state=state, tokens=tokens, logits=logits_from("logits"),
        transcript=_transcript_from(path, header), snapshots=snapshots,
    )


def load_state(path: str | Path, model: Any = None, *, allow_other_model: bool = False) -> State:
    """The state stored in ``path`` (see :func:`load_state_file` for the checks)."""
    return load_state_file(path, model, allow_other_model=allow_other_model).state


def check_fits(info: StateFileInfo, model: Any, *, allow_other_model: bool = False) -> None:
    """Raise unless the file described by ``info`` belongs to ``model`` (Model or ModelInfo)."""
    model_info = getattr(model, "info", model)
    want = (model_info.n_layer, model_info.n_embd, model_info.n_head, model_info.head_size)
    have = (info.n_layer, info.n_embd, info.n_head, info.head_size)
    if have != want:
        raise StateError(
            f"{info.path}: state is for a model of {info.shape_text()}; "
            f"{model_info.name} has {want[0]} layers × {want[1]} ({want[2]} heads of {want[3]})"
        )
    vocab_matters = info.has_logits or info.history_tokens
    if vocab_matters and info.vocab and model_info.vocab and info.vocab != model_info.vocab:
        raise StateError(
            f"{info.path}: state was saved with a {info.vocab}-token vocabulary; "
            f"{model_info.name} has {model_info.vocab}"
        )
    if info.fingerprint and not allow_other_model and not same_weights(info, model_info):
        source = f" ({info.model_name})" if info.model_name else ""
        if info.fingerprint_scheme < FINGERPRINT_SCHEME:
            model_print = getattr(model_info, "legacy_fingerprint", "") or model_info.fingerprint
            raise StateModelMismatchError(
                f"{info.path}: saved by an older rwkv-tui from other weights{source} (its fingerprint "
                f"{info.fingerprint}; {model_info.name} is {model_print} by that older scheme)",
                info.fingerprint, model_print,
            )
        if info.fingerprint_scheme > FINGERPRINT_SCHEME:
            raise StateModelMismatchError(
                f"{info.path}: saved by a newer rwkv-tui, whose fingerprint {info.fingerprint}{source} "
                f"this version cannot compare with {model_info.name}'s; it may be from other weights",
                info.fingerprint, model_info.fingerprint,
            )
        raise StateModelMismatchError(
            f"{info.path}: saved from other weights{source}, fingerprint {info.fingerprint}; "
            f"{model_info.name} is {model_info.fingerprint}",
            info.fingerprint, model_info.fingerprint,
        )


def same_weights(info: StateFileInfo, model: Any) -> bool:
    """Whether the file was saved from ``model``'s weights, by the fingerprint scheme it records.

    Files of earlier versions (scheme 1) are compared with the model's legacy fingerprint, so
    they keep loading; that scheme cannot tell weights apart that differ only in big matrices.
    """
    model_info = getattr(model, "info", model)
    if info.fingerprint_scheme < FINGERPRINT_SCHEME:
        return bool(info.fingerprint) and info.fingerprint == getattr(model_info, "legacy_fingerprint", "")
    return info.fingerprint_scheme == FINGERPRINT_SCHEME and info.fingerprint == model_info.fingerprint


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """The parsed JSON header, its length and the file size, with every cheap sanity check."""
    _check_is_file(path)
    sniffed = sniff(path, StateError, "an rwkv-tui state file")
    if sniffed.header is None:
        if sniffed.kind is not None:
            raise StateError(f"{path}: {_FOREIGN[sniffed.kind]}, not an rwkv-tui state file")
        raise StateError(f"{path}: {sniffed.problem}")
    return sniffed.header, sniffed.header_length, sniffed.size


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise StateError(f"{path}: no such file")
    if path.is_dir():
        raise StateError(f"{path}: is a directory, not a state file")


#: How a file of another format is described when it is given as a state file.
_FOREIGN = {
    **DESCRIPTIONS,
    "zip": "a PyTorch .pth archive (import state-tuning files with `rwkv-tui state convert`)",
    "pickle": "a Python pickle (refused: pickles can carry code)",
}


def _info_from_header(path: Path, header: dict[str, Any], header_len: int, size: int) -> StateFileInfo:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        if any(isinstance(k, str) and k.endswith(".att.time_state") for k in header):
            raise StateError(
                f"{path}: a safetensors state-tuning file (blocks.N.att.time_state), not an "
                "rwkv-tui state file; import it with `rwkv-tui state convert`"
            )
        raise StateError(f"{path}: not an rwkv-tui state file (safetensors without the {FORMAT} marker)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise StateError(f"{path}: corrupt header (metadata values must be strings)")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise StateError(f"{path}: corrupt header (metadata lacks {', '.join(missing)})")
    version = _meta_int(path, meta, "format_version", 1, 1 << 20)
    if version > FORMAT_VERSION:
        raise StateError(
            f"{path}: written by a newer rwkv-tui (state format {version}); "
            f"this version reads format {FORMAT_VERSION} — please upgrade"
        )
    kind = meta["kind"]
    if kind not in KINDS:
        raise StateError(f"{path}: corrupt header (unknown kind {kind!r})")
    dims = {name: _meta_int(path, meta, name, 1, bound) for name, bound in _MAX_DIM.items()}
    if dims["n_head"] * dims["head_size"] != dims["n_embd"]:
        raise StateError(
            f"{path}: corrupt header (n_head × head_size = {dims['n_head']}×{dims['head_size']} "
            f"≠ n_embd {dims['n_embd']})"
        )
    vocab = _meta_int(path, meta, "vocab", 0, _MAX_VOCAB) if meta.get("vocab") else 0
    tokens_seen = _meta_int(path, meta, "tokens_seen", 0, 1 << 62)
    dtype = meta["dtype"]
    if dtype not in _STORAGE_DTYPES:
        raise StateError(f"{path}: corrupt header (unknown dtype {dtype!r})")
    layout = meta.get("wkv_layout", WKV_LAYOUT)
    if layout != WKV_LAYOUT:
        raise StateError(f"{path}: unsupported WKV layout {layout!r} (expected {WKV_LAYOUT})")
    fingerprint = meta["fingerprint"]
    if fingerprint and not re.fullmatch(r"[0-9a-f]{8,64}", fingerprint):
        raise StateError(f"{path}: corrupt header (fingerprint {fingerprint[:40]!r})")
    scheme = _meta_int(path, meta, "fingerprint_scheme", 1, 1 << 20) if "fingerprint_scheme" in meta else 1
    checksum = meta.get("checksum", "")
    if checksum and not _CHECKSUM.fullmatch(checksum):
        raise StateError(f"{path}: corrupt header (checksum {checksum[:40]!r})")
    try:
        extra_meta = json.loads(meta.get("meta", "{}"))
    except (ValueError, RecursionError):
        raise StateError(f"{path}: corrupt header (meta is not valid JSON)") from None
    if not isinstance(extra_meta, dict):
        raise StateError(f"{path}: corrupt header (meta is not a JSON object)")

    L, C, H, N = dims["n_layer"], dims["n_embd"], dims["n_head"], dims["head_size"]
    state_dtype = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}[dtype]
    state_shapes = {"att_x": [L, C], "wkv": [L, H, N, N], "ffn_x": [L, C]}
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    spans: list[tuple[int, int, str]] = []
    history_tokens = 0
    snapshot_parts: dict[int, set[str]] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise StateError(f"{path}: corrupt header (entry {name!r} is not an object)")
        tensor_dtype, shape, begin, end = _entry_fields(path, name, entry)
        snapshot = _SNAPSHOT_NAME.match(name)
        part = snapshot.group(2) if snapshot else name
        if snapshot:
            snapshot_parts.setdefault(int(snapshot.group(1)), set()).add(part)
        if part in state_shapes:
            expected_dtype, expected_shape = state_dtype, state_shapes[part]
        elif part == "logits":
            expected_dtype = "F32"
            expected_shape = [vocab] if vocab else shape
            if len(shape) != 1 or not 0 < shape[0] <= _MAX_VOCAB:
                raise StateError(f"{path}: corrupt header ({name} has shape {shape})")
        elif name == "tokens":
            expected_dtype = tensor_dtype if tensor_dtype in ("I32", "I64") else "I32"
            if len(shape) != 1 or shape[0] > _MAX_TOKENS:
                raise StateError(f"{path}: corrupt header (tokens has shape {shape})")
            expected_shape = shape
            history_tokens = shape[0]
        else:
            raise StateError(f"{path}: unexpected tensor {name!r} in a state file")
        if tensor_dtype != expected_dtype:
            raise StateError(f"{path}: tensor {name} is {tensor_dtype}, expected {expected_dtype}")
        if shape != expected_shape:
            raise StateError(
                f"{path}: tensor {name} has shape {tuple(shape)}, the header's model needs "
                f"{tuple(expected_shape)}"
            )
        if end - begin != math.prod(shape) * _DTYPE_BYTES[tensor_dtype]:
            raise StateError(f"{path}: corrupt header (byte range of {name} does not match its shape)")
        spans.append((begin, end, name))
    for part in _STATE_PARTS:
        if part not in entries:
            raise StateError(f"{path}: corrupt state file (tensor {part} is missing)")
    for index, parts in snapshot_parts.items():
        if not set(_STATE_PARTS) <= parts:
            raise StateError(f"{path}: corrupt state file (snapshot {index} is incomplete)")

    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise StateError(f"{path}: corrupt header (tensor data of {name} overlaps or leaves a gap)")
        position = end
    data_size = position
    available = size - 8 - header_len
    if available < data_size:
        raise StateError(
            f"{path}: truncated: the tensors need {data_size} bytes of data, the file has {available}"
        )
    if available > data_size:
        raise StateError(f"{path}: corrupt: {available - data_size} unexpected bytes after the tensor data")

    return StateFileInfo(
        path=str(path), format_version=version, kind=kind, fingerprint=fingerprint,
        model_name=meta.get("model_name", ""), n_layer=L, n_embd=C, n_head=H, head_size=N,
        vocab=vocab, dtype=dtype, tokens_seen=tokens_seen, created=meta.get("created", ""),
        app_version=meta.get("app_version", ""),
        meta={str(k): str(v) for k, v in extra_meta.items()}, file_bytes=size,
        history_tokens=history_tokens, has_logits="logits" in entries,
        has_transcript="transcript" in meta, snapshots=tuple(sorted(snapshot_parts)),
        fingerprint_scheme=scheme, checksum=checksum,
    )


def _entry_fields(path: Path, name: str, entry: dict[str, Any]) -> tuple[str, list[int], int, int]:
    tensor_dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if tensor_dtype not in _DTYPE_BYTES:
        raise StateError(f"{path}: tensor {name} has unsupported dtype {str(tensor_dtype)[:20]!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)
    ):
        raise StateError(f"{path}: corrupt header (bad shape for {name})")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < 1 << 50 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise StateError(f"{path}: corrupt header (bad data offsets for {name})")
    return tensor_dtype, shape, offsets[0], offsets[1]


def _meta_int(path: Path, meta: Mapping[str, str], key: str, low: int, high: int) -> int:
    text = meta.get(key, "")
    if not re.fullmatch(r"\d{1,20}", text):
        raise StateError(f"{path}: corrupt header ({key} = {text[:30]!r} is not a number)")
    value = int(text)
    if not low <= value <= high:
        raise StateError(f"{path}: corrupt header ({key} = {value} is out of range)")
    return value


def _transcript_from(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    text = header["__metadata__"].get("transcript")
    if text is None:
        return None
    try:
        transcript = json.loads(text)
    except (ValueError, RecursionError):
        raise StateError(f"{path}: the stored transcript is not valid JSON") from None
    if not isinstance(transcript, dict):
        raise StateError(f"{path}: the stored transcript is not a JSON object")
    return transcript

