"""Tokenizers behind one small protocol, and the choice of one for a checkpoint.

* ``world``: the RWKV World vocabulary (rwkv_vocab_v20230424). Encoding goes through the Rust
  pyrwkv-tokenizer; decoding uses a byte table read from the same vocabulary file, because
  streaming needs the bytes of each token (a token may end in the middle of a UTF-8 character).
* ``midi``: the MIDI-LLM token language (20,096 words) as a Hugging Face WordLevel tokenizer.
* ``abc``: characters of ABC notation, id = code point, BOS 2 and EOS 3.
* ``bytes``: id = byte value.

Streaming goes through ``stream_decoder()``: feed ids one at a time and receive only complete
text, so a UI never shows half a character.
"""

from __future__ import annotations

import ast
import codecs
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

from engine.errors import TokenizerError
from engine.music import midi_vocab

TOKENIZER_NAMES = ("world", "midi", "abc", "bytes")


class StreamDecoder(Protocol):
    def feed(self, token: int) -> str:
        """Text completed by this token (possibly empty)."""

    def flush(self) -> str:
        """Whatever is still pending at the end of a stream."""


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    #: Token that separates documents / ends a piece; never part of normal text.
    end_token: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def stream_decoder(self) -> StreamDecoder: ...


class _Utf8StreamDecoder:
    """Decodes a stream of per-token byte strings into complete UTF-8 text."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._decoder.decode(self._token_bytes(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class _ByteTableTokenizer:
    """Shared decoding for tokenizers whose tokens are byte strings."""

    name: str
    vocab_size: int
    end_token: int | None

    def token_bytes(self, token: int) -> bytes:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return _Utf8StreamDecoder(self.token_bytes)


class WorldTokenizer(_ByteTableTokenizer):
    """RWKV World tokenizer: greedy longest match over bytes; id 0 is end-of-text."""

    name = "world"
    vocab_size = 65536
    end_token = 0

    def __init__(self) -> None:
        try:
            import pyrwkv_tokenizer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise TokenizerError(f"the world tokenizer needs pyrwkv-tokenizer ({exc})") from None
        self._rust = pyrwkv_tokenizer.RWKVTokenizer()
        # Read now, while a model loads, rather than when the first reply's first token arrives.
        self._table = _read_world_vocab(Path(pyrwkv_tokenizer.__file__).with_name("rwkv_vocab_v20230424.txt"))

    def encode(self, text: str) -> list[int]:
        return list(self._rust.encode(text))

    def token_bytes(self, token: int) -> bytes:
        if 0 < token < len(self._table):
            return self._table[token]
        return b""  # id 0 (end of text) and unused ids carry no text


def _read_world_vocab(path: Path) -> list[bytes]:
    """Parse ``<id> <python str or bytes literal> <byte length>`` lines (literals only, no eval)."""
    table: list[bytes] = [b""]
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        first, last = line.index(" "), line.rindex(" ")
        token_id, literal, length = int(line[:first]), line[first + 1:last], int(line[last + 1:])
        value = _plain_literal(literal)
        if value is None:
            value = ast.literal_eval(literal)
        data = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(data, bytes) or len(data) != length or token_id != len(table):
            raise TokenizerError(f"{path}:{line_no}: malformed vocabulary line")
        table.append(data)
    return table


def _plain_literal(literal: str) -> str | bytes | None:
    """A quoted literal without escapes, read directly: 64,700 of the 65,529 vocabulary lines.

    ast.literal_eval on every line took 1.3 s; escapes and anything unusual still go through it.
    """
    if len(literal) >= 2 and "\\" not in literal:
        quote = literal[0]
        if quote in "'\"" and literal[-1] == quote and quote not in literal[1:-1]:
            return literal[1:-1]
        if literal[0] == "b" and len(literal) >= 3 and literal[1] in "'\"" and literal[-1] == literal[1]:
            body = literal[2:-1]
            if literal[1] not in body and body.isascii():
                return body.encode("ascii")
    return None


class BytesTokenizer(_ByteTableTokenizer):
    """One token per byte. Used by the built-in chat demo model."""

    name = "bytes"
    vocab_size = 256
    end_token = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token: int) -> bytes:
        return bytes((token,)) if 0 < token < 256 else b""


class AbcTokenizer:
    """Character-level ABC: id = code point; 0 pad, 2 BOS, 3 EOS; ids ≤ 3 carry no text."""

    name = "abc"
    end_token = 3
    BOS = 2
    EOS = 3

    def __init__(self, vocab_size: int = 128) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        ids = [ord(ch) for ch in text]
        for position, (ch, code) in enumerate(zip(text, ids)):
            if code >= self.vocab_size or (code <= 3 and ch not in "\x02\x03"):
                raise TokenizerError(
                    f"character {ch!r} (U+{code:04X}) at position {position} is not in the ABC vocabulary"
                )
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in ids if 3 < t < self.vocab_size)

    def stream_decoder(self) -> StreamDecoder:
        return _CallableStreamDecoder(lambda t: chr(t) if 3 < t < self.vocab_size else "")


class _CallableStreamDecoder:
    def __init__(self, text_of: Callable[[int], str]) -> None:
        self._text_of = text_of

    def feed(self, token: int) -> str:
        return self._text_of(token)

    def flush(self) -> str:
        return ""


class MidiTokenizer:
    """The MIDI-LLM token language: space-separated words, unknown words become ``<pad>``."""

    name = "midi"
    vocab_size = midi_vocab.VOCAB_SIZE
    end_token = midi_vocab.PAD_ID  # RWKV MIDI models end a piece with <pad>

    def __init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, normalizers, pre_tokenizers

        self.words = midi_vocab.vocabulary()
        vocab = {word: i for i, word in enumerate(self.words)}
        hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=midi_vocab.PAD))
        hf.normalizer = normalizers.Lowercase()
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.add_special_tokens(list(midi_vocab.SPECIALS))
        self._hf = hf

    @property
    def hf_tokenizer(self):  # noqa: ANN201 - the tokenizers type, for export and tests
        return self._hf

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Space-joined words; specials are kept so a piece's boundaries stay visible."""
        return " ".join(self.words[t] for t in ids if 0 <= t < self.vocab_size)

    def stream_decoder(self) -> StreamDecoder:
        first = [True]

        def text_of(token: int) -> str:
            if not 0 <= token < self.vocab_size:
                return ""
            word = self.words[token]
            if first[0]:
                first[0] = False
                return word
            return " " + word

        return _CallableStreamDecoder(text_of)


@lru_cache(maxsize=None)
def get_tokenizer(name: str) -> Tokenizer:
    """A shared tokenizer by name: world, midi, abc or bytes."""
    key = name.lower().strip()
    if key == "world":
        return WorldTokenizer()
    if key == "midi":
        return MidiTokenizer()
    if key == "abc":
        return AbcTokenizer()
    if key == "bytes":
        return BytesTokenizer()
    raise TokenizerError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZER_NAMES)}")


_HINTS = ((re.compile(r"-abc-", re.I), "abc"), (re.compile(r"-midi-", re.I), "midi"))


def tokenizer_name_for(model_path: str | Path, vocab_size: int) -> str:
    """Pick the tokenizer a checkpoint was trained with.

    Order: a sidecar ``<model>.json`` with a "tokenizer" field (our demo models ship one), the
    file-name hints ``-ABC-`` / ``-MIDI-`` of the official music models, then the vocabulary size.
    """
    path = Path(model_path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            declared = json.loads(sidecar.read_text(encoding="utf-8")).get("tokenizer")
        except (OSError, ValueError, AttributeError):
            declared = None
        if isinstance(declared, str) and declared in TOKENIZER_NAMES:
            return declared
    for pattern, name in _HINTS:
        if pattern.search(path.name):
            return name
    if vocab_size == midi_vocab.VOCAB_SIZE:
        return "midi"
    if vocab_size <= 256 and vocab_size != 256:
        return "abc"
    if vocab_size == 256:
        return "bytes"
    return "world"
