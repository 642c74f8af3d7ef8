"""RWKV-7 GGUF files (llama.cpp's ``rwkv7`` architecture), read with the ``gguf`` package.

llama.cpp publishes every RWKV-7 G1 size as GGUF; this reads them into our checkpoint's names
and layout, so everything downstream (the CPU kernels, state files, the tokenizer choice) is
the same as for a ``.pth``. The layout is llama.cpp's converter's (conversion/rwkv.py,
``Rwkv7Model.modify_tensors``) and loader's (src/models/rwkv7.cpp, ``load_arch_tensors``):

* LoRA matrices are stored transposed (``time_mix_w1`` is our ``att.w1`` transposed), which is
  the CPU backend's own layout, so a quantized one is used as it is;
* the six token-shift coefficients are one ``time_mix_lerp_fused`` tensor, in the order r, w,
  k, v, a, g; vectors are flat, ``time_mix_r_k`` is (H·N);
* layer 0 carries copies of its in-context-rate LoRA as a dummy value-residual LoRA (llama.cpp
  requires the tensors); they are dropped.

Storage types: F32, F16 and BF16 become tensors; Q8_0 and Q4_0 blocks are exactly our int8 and
q4 blocks (one fp16 scale per 32, the same nibble order), so they are taken over without any
rounding, except the FFN value matrix, which our sparse kernel keeps transposed and so must
be re-blocked along its other dimension. K-quants (Q4_K, Q5_K, Q6_K, …) are widened and
stored in the nearest of our formats, which a one-line note reports.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.errors import CheckpointError
from engine.quant import GROUP, QuantizedMatrix

log = logging.getLogger(__name__)

ARCHITECTURE = "rwkv7"
MIX_ORDER = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # = llama.cpp's lerp_list r, w, k, v, a, g
LORA = ("w", "a", "v", "g")
#: Per-layer tensors whose GGUF name and ours differ only by prefix, stored as they are.
_LAYER_DIRECT = {
    "attn_norm.weight": "ln1.weight", "attn_norm.bias": "ln1.bias",
    "attn_norm_2.weight": "ln2.weight", "attn_norm_2.bias": "ln2.bias",
    "time_mix_receptance.weight": "att.receptance.weight", "time_mix_key.weight": "att.key.weight",
    "time_mix_value.weight": "att.value.weight", "time_mix_output.weight": "att.output.weight",
    "time_mix_ln.weight": "att.ln_x.weight", "time_mix_ln.bias": "att.ln_x.bias",
    "channel_mix_key.weight": "ffn.key.weight", "channel_mix_value.weight": "ffn.value.weight",
}
_GLOBAL_DIRECT = {
    "token_embd.weight": "emb.weight", "output.weight": "head.weight",
    "token_embd_norm.weight": "blocks.0.ln0.weight", "token_embd_norm.bias": "blocks.0.ln0.bias",
    "output_norm.weight": "ln_out.weight", "output_norm.bias": "ln_out.bias",
}
#: Our vectors stored (1, 1, C) in checkpoints, flat in GGUF.
_LAYER_VECTORS = {
    "time_mix_w0.weight": "att.w0", "time_mix_a0.weight": "att.a0", "time_mix_v0.weight": "att.v0",
    "time_mix_k_k.weight": "att.k_k", "time_mix_k_a.weight": "att.k_a", "channel_mix_lerp_k.weight": "ffn.x_k",
}
_LORA_NAME = re.compile(r"^time_mix_[wavg][12]\.weight$")
#: The quantized format a K-quant is widened into: the nearest at or above its bits.
_NEAREST = {"Q2_K": "q4", "Q3_K": "q4", "Q4_K": "q4", "Q4_1": "q4", "Q5_0": "int8", "Q5_1": "int8",
            "Q5_K": "int8", "Q6_K": "int8", "Q8_1": "int8", "Q8_K": "int8"}


@dataclass(frozen=True)
class GgufModel:
    weights: dict[str, torch.Tensor | QuantizedMatrix]
    #: The format the file's large matrices are in, as a --dtype name.
    dtype: str
    #: The tokenizer the file names (world for llama.cpp's "rwkv" vocabulary), or None.
    tokenizer: str | None
    #: One line when some tensors had to be converted (K-quants), else "".
    note: str


def is_gguf(path: str | Path) -> bool:
    try:
        with Path(path).expanduser().open("rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def read_gguf(path: str | Path) -> GgufModel:
    """Read an ``rwkv7`` GGUF file into checkpoint names; one-line CheckpointError if damaged."""
    path = Path(path).expanduser()
    try:
        import gguf
    except ImportError:
        raise CheckpointError(f"{path}: reading GGUF files needs the gguf package (pip install gguf)") from None
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # ValueError, struct errors, mmap errors: all mean a damaged file
        raise CheckpointError(f"{path}: corrupt or truncated GGUF file ({_first_line(exc)})") from None
    try:
        return _convert(path, reader, gguf)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt GGUF file ({_first_line(exc)})") from None


def _field(reader: Any, name: str) -> Any:
    field = reader.fields.get(name)
    if field is None:
        return None
    return field.contents()


def _convert(path: Path, reader: Any, gguf: Any) -> GgufModel:
    arch = _field(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise CheckpointError(f"{path}: a GGUF model of architecture {str(arch)[:40]!r}, not RWKV-7 ({ARCHITECTURE})")
    head_size = _field(reader, f"{ARCHITECTURE}.wkv.head_size")
    if not isinstance(head_size, int) or head_size <= 0:
        raise CheckpointError(f"{path}: corrupt GGUF header ({ARCHITECTURE}.wkv.head_size)")
    Q = gguf.GGMLQuantizationType
    counts: dict[str, int] = {}
    widened: dict[str, int] = {}
    weights: dict[str, torch.Tensor | QuantizedMatrix] = {}
    lerp: dict[int, torch.Tensor] = {}

    for tensor in reader.tensors:
        name = tensor.name
        kind = Q(tensor.tensor_type).name
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # numpy order, rows first
        native = kind in ("Q8_0", "Q4_0") and len(shape) == 2

        def floats() -> torch.Tensor:
            return _floats(tensor, kind, shape, gguf, widened)

        def matrix(transposed: bool) -> torch.Tensor | QuantizedMatrix:
            if native:
                counts[kind] = counts.get(kind, 0) + 1
                return _native_blocks(tensor, kind, shape, transposed)
            counts[kind] = counts.get(kind, 0) + 1
            values = floats()
            return values.t().contiguous() if transposed else values

        if name in _GLOBAL_DIRECT:
            # The embedding is read one row per token: kept as floats, so fingerprints work.
            weights[_GLOBAL_DIRECT[name]] = floats() if name == "token_embd.weight" else matrix(False)
            continue
        if not name.startswith("blk."):
            raise CheckpointError(f"{path}: unexpected tensor {name[:80]} in an RWKV-7 GGUF")
        _, index, rest = name.split(".", 2)
        if not index.isdigit():
            raise CheckpointError(f"{path}: unexpected tensor {name[:80]}")
        layer = int(index)
        prefix = f"blocks.{layer}."
        if rest == "channel_mix_value.weight" and native:
            # our sparse product keeps this matrix transposed, blocked along the other dimension
            counts[kind] = counts.get(kind, 0) + 1
            weights[prefix + "ffn.value.weight"] = _native_blocks(tensor, kind, shape, False).checkpoint_tensor()
        elif rest in _LAYER_DIRECT:
            weights[prefix + _LAYER_DIRECT[rest]] = matrix(False)
        elif rest in _LAYER_VECTORS:
            if layer == 0 and rest == "time_mix_v0.weight":
                continue  # layer 0's dummy value-residual LoRA
            weights[prefix + _LAYER_VECTORS[rest]] = floats().reshape(1, 1, -1)
        elif rest == "time_mix_r_k.weight":
            weights[prefix + "att.r_k"] = floats().reshape(-1, head_size)
        elif rest == "time_mix_lerp_fused.weight":
            lerp[layer] = floats().reshape(len(MIX_ORDER), -1)
        elif _LORA_NAME.match(rest):
            if layer == 0 and rest[9] == "v":
                continue
            # GGUF holds the transpose of our (C, rank) / (rank, C) matrix: the backend's layout
            weights[f"{prefix}att.{rest[9:11]}"] = matrix(True)
        else:
            raise CheckpointError(f"{path}: unexpected tensor {name[:80]} in an RWKV-7 GGUF")
    for layer, stacked in lerp.items():
        for row, mix in enumerate(MIX_ORDER):
            weights[f"blocks.{layer}.att.{mix}"] = stacked[row].reshape(1, 1, -1).clone()

    dtype = _dominant_dtype(counts)
    note = ""
    if widened:
        listed = ", ".join(f"{n} {k}" for k, n in sorted(widened.items()))
        note = f"{path.name}: {listed} tensors widened and stored as {dtype} (our nearest format)"
        log.warning("%s", note)
    model = _field(reader, "tokenizer.ggml.model")
    tokenizer = "world" if model == "rwkv" else None
    return GgufModel(weights, dtype, tokenizer, note)


def _dominant_dtype(counts: Mapping[str, int]) -> str:
    """The --dtype that runs the file's matrices closest to how they are stored."""
    names = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "Q8_0": "int8", "Q4_0": "q4", **_NEAREST}
    by_format: dict[str, int] = {}
    for kind, n in counts.items():
        by_format[names.get(kind, "fp32")] = by_format.get(names.get(kind, "fp32"), 0) + n
    return max(by_format, key=lambda k: by_format[k]) if by_format else "fp32"


def _raw(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.data)


def _floats(tensor: Any, kind: str, shape: tuple[int, ...], gguf: Any, widened: dict[str, int]) -> torch.Tensor:
    data = _raw(tensor)
    if kind == "F32":
        values = torch.from_numpy(np.array(data, dtype=np.float32))
    elif kind == "F16":
        values = torch.from_numpy(np.array(data, dtype=np.float16))
    elif kind == "BF16":
        values = torch.from_numpy(np.array(data).view(np.int16).copy()).view(torch.bfloat16)
    else:
        if kind not in ("Q8_0", "Q4_0"):
            widened[kind] = widened.get(kind, 0) + 1
        dense = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[kind])
        values = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    if values.numel() != int(np.prod(shape)):
        raise CheckpointError(f"tensor {tensor.name[:80]} holds {values.numel()} values for shape {shape}")
    return values.reshape(shape)


#: Bytes of one block: an fp16 scale, then 32 int8 levels (Q8_0) or 16 bytes of nibbles (Q4_0).
_BLOCK_BYTES = {"Q8_0": 2 + GROUP, "Q4_0": 2 + GROUP // 2}


def _native_blocks(tensor: Any, kind: str, shape: tuple[int, ...], transposed: bool) -> QuantizedMatrix:
    """Q8_0/Q4_0 blocks as our int8/q4 blocks, bit for bit (matrix scale 1)."""
    rows, cols = shape
    if cols % GROUP:
        raise CheckpointError(f"tensor {tensor.name[:80]}: {cols} columns is not a whole number of blocks")
    blocks = np.array(_raw(tensor), dtype=np.uint8).reshape(rows, cols // GROUP, _BLOCK_BYTES[kind])
    d = torch.from_numpy(blocks[:, :, :2].copy().view(np.float16).reshape(rows, cols // GROUP))
    levels = blocks[:, :, 2:].reshape(rows, -1)
    if kind == "Q8_0":
        q = torch.from_numpy(levels.copy().view(np.int8))
        fmt = "int8"
    else:
        q = torch.from_numpy(levels.copy())
        fmt = "q4"
    if not torch.isfinite(d).all():
        raise CheckpointError(f"tensor {tensor.name[:80]}: block scales hold NaN or infinite values")
    return QuantizedMatrix(fmt, q, d, 1.0, (rows, cols), transposed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# ------------------------------------------------------------------------------- writing


def write_gguf(state_dict: Mapping[str, torch.Tensor], path: str | Path, matrix_type: str = "BF16") -> Path:
    """Write a checkpoint as llama.cpp's ``rwkv7`` GGUF (the inverse of :func:`read_gguf`),
    its matrices in ``matrix_type`` (F32, BF16, or Q8_0/Q4_0 through the gguf package's own
    quantizers), with the World vocabulary as llama.cpp's converter writes it
    (``_set_vocab_rwkv_world``). For tests and the llama.cpp benchmark."""
    import gguf

    Q = gguf.GGMLQuantizationType
    C = state_dict["emb.weight"].shape[1]
    vocab = state_dict["emb.weight"].shape[0]
    n_layer = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    head_size = state_dict["blocks.0.att.r_k"].shape[1]
    ranks = {n: state_dict[f"blocks.0.att.{n}1"].shape[1] for n in ("w", "a", "g")}
    # layer 0's value-residual LoRA is a dummy of the ICLR LoRA's shape (see the module docstring)
    ranks["v"] = state_dict["blocks.1.att.v1"].shape[1] if n_layer > 1 else ranks["a"]
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_context_length(1048576)
    writer.add_embedding_length(C)
    writer.add_block_count(n_layer)
    writer.add_layer_norm_eps(1e-5)
    writer.add_wkv_head_size(head_size)
    writer.add_decay_lora_rank(ranks["w"])
    writer.add_iclr_lora_rank(ranks["a"])
    writer.add_value_residual_mix_lora_rank(ranks["v"])
    writer.add_gate_lora_rank(ranks["g"])
    writer.add_feed_forward_length(state_dict["blocks.0.ffn.key.weight"].shape[0])
    writer.add_file_type({"F32": gguf.LlamaFileType.ALL_F32, "BF16": gguf.LlamaFileType.MOSTLY_BF16,
                          "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[matrix_type])
    writer.add_head_count(0)
    tokens, types = _world_vocab(vocab, gguf)
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_bos_token_id(0)
    writer.add_eot_token_id(261)

    def put(name: str, tensor: torch.Tensor, matrix: bool = False) -> None:
        values = tensor.detach().to(torch.float32).contiguous()
        if not matrix or matrix_type == "F32":
            writer.add_tensor(name, values.numpy())
        elif matrix_type == "BF16":
            data = tensor.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=Q.BF16)
        else:
            data = gguf.quants.quantize(values.numpy(), Q[matrix_type])  # uint8 blocks, byte shape
            writer.add_tensor(name, data, raw_dtype=Q[matrix_type])

    inverse_global = {ours: theirs for theirs, ours in _GLOBAL_DIRECT.items()}
    for ours, theirs in inverse_global.items():
        put(theirs, state_dict[ours], matrix=theirs in ("token_embd.weight", "output.weight"))
    inverse_layer = {ours: theirs for theirs, ours in _LAYER_DIRECT.items()}
    for i in range(n_layer):
        p, b = f"blocks.{i}.", f"blk.{i}."
        for ours, theirs in inverse_layer.items():
            put(b + theirs, state_dict[p + ours], matrix=state_dict[p + ours].dim() == 2)
        for theirs, ours in _LAYER_VECTORS.items():
            source = ours if not (i == 0 and ours == "att.v0") else "att.a0"
            put(b + theirs, state_dict[p + source].reshape(-1))
        put(b + "time_mix_r_k.weight", state_dict[p + "att.r_k"].reshape(-1))
        put(b + "time_mix_lerp_fused.weight", torch.stack([state_dict[p + "att." + m] for m in MIX_ORDER]))
        for n in LORA:
            source = "a" if (n == "v" and i == 0) else n
            put(f"{b}time_mix_{n}1.weight", state_dict[f"{p}att.{source}1"].t(), matrix=True)
            put(f"{b}time_mix_{n}2.weight", state_dict[f"{p}att.{source}2"].t(), matrix=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _world_vocab(vocab_size: int, gguf: Any) -> tuple[list[bytes], list[int]]:
    """<s>, then each World token's escaped bytes, then padding, as llama.cpp's converter does."""
    import ast

    import pyrwkv_tokenizer

    tokens: list[bytes] = [b"<s>"]
    types = [gguf.TokenType.CONTROL]
    vocab_file = Path(pyrwkv_tokenizer.__file__).with_name("rwkv_vocab_v20230424.txt")
    for line in vocab_file.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        token = ast.literal_eval(" ".join(parts[1:-1]))
        token = token.encode("utf-8") if isinstance(token, str) else token
        tokens.append(repr(token)[2:-1].encode("utf-8"))
        types.append(gguf.TokenType.NORMAL)
    tokens, types = tokens[:vocab_size], types[:vocab_size]
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
    return tokens, types
