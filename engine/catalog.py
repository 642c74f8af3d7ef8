"""The catalog of official RWKV models: what can be downloaded, from where, and what is here.

The catalog is a JSON file shipped in the package (``engine/catalog.json``, taken from
RWKV-Runner's manifest, which it cites). ``RWKV_TUI_CATALOG`` names another file instead, for a
private mirror or for tests. It is checked when it is read: a broken catalog is one line that
names the file and the entry, never a KeyError later.

Downloaded files live flat in :func:`models_dir` under their official file names, so the engine
still recognises them by name (``-MIDI-``, ``-ABC-``); :func:`resolve_model_path` lets a catalog
name stand wherever a model path is expected.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from engine.errors import EngineError
from engine.paths import cache_dir

CATALOG_FORMAT = 1
KINDS = ("chat", "music", "state")
ARCHITECTURES = ("rwkv4", "rwkv5", "rwkv6", "rwkv7")
#: Architectures the engine can load today (engine.checkpoint refuses the others by name).
RUNNABLE_ARCHITECTURES = frozenset({"rwkv7"})
#: Bytes per weight of each storage type a catalog entry may declare.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SOURCES = ("huggingface", "modelscope")
#: Suffix of an unfinished download beside the final file (see engine.downloads).
PARTIAL_SUFFIX = ".partial"

Kind = Literal["chat", "music", "state"]
Source = Literal["huggingface", "modelscope"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CatalogError(EngineError):
    """The catalog file is missing, not JSON, or an entry breaks the schema."""


class NotDownloadedError(EngineError):
    """A catalog model was named that is not on this machine yet."""


@dataclass(frozen=True)
class Mirror:
    """Where one download source keeps the file: a repository and a revision (branch)."""

    repo: str
    revision: str


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    aliases: tuple[str, ...]
    kind: Kind
    architecture: str
    description: str
    file: str
    size: int
    sha256: str | None
    file_dtype: str
    huggingface: Mirror | None
    modelscope: Mirror | None
    #: State files only: the catalog name of the model they were tuned on.
    for_model: str | None = None

    @property
    def runnable(self) -> bool:
        """Whether this version of the engine can load the file."""
        return self.architecture in RUNNABLE_ARCHITECTURES

    @property
    def architecture_label(self) -> str:
        return "RWKV-" + self.architecture.removeprefix("rwkv")

    def mirror(self, source: Source) -> Mirror | None:
        return self.huggingface if source == "huggingface" else self.modelscope

    def weight_count(self) -> int:
        """Weights in the file, from its size (headers are a rounding error next to the tensors)."""
        return self.size // DTYPE_BYTES[self.file_dtype]


@dataclass(frozen=True)
class Catalog:
    path: Path
    entries: tuple[CatalogEntry, ...]
    #: Where the names and sizes come from (the cited manifest).
    source: dict[str, Any]
    notes: tuple[str, ...]

    def find(self, name: str) -> CatalogEntry | None:
        """The entry called ``name`` (or with that alias or file name), ignoring case."""
        key = name.strip().lower()
        for entry in self.entries:
            if key in (entry.name.lower(), entry.file.lower(), *(a.lower() for a in entry.aliases)):
                return entry
        return None

    def get(self, name: str) -> CatalogEntry:
        """Like :meth:`find`, but an unknown name is a one-line error listing what exists."""
        entry = self.find(name)
        if entry is None:
            raise CatalogError(
                f"no model called {name!r} in the catalog; `rwkv-tui models list` shows "
                f"the {len(self.entries)} it has"
            )
        return entry


# ---------------------------------------------------------------------------- reading


def catalog_path() -> Path:
    """The catalog in use: ``RWKV_TUI_CATALOG`` or the one shipped with the package."""
    override = os.environ.get("RWKV_TUI_CATALOG")
    return Path(override).expanduser() if override else Path(__file__).resolve().parent / "catalog.json"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and check the catalog (cached per file and modification time)."""
    path = Path(path) if path is not None else catalog_path()
    try:
        stat = path.stat()
    except OSError as exc:
        raise CatalogError(f"model catalog {path}: {exc.strerror or exc}") from None
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int, _size: int) -> Catalog:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"model catalog {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"model catalog {path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    return parse_catalog(data, Path(path))


def parse_catalog(data: object, path: Path) -> Catalog:
    """Check ``data`` against the schema; the first problem is a one-line CatalogError."""
    where = f"model catalog {path}"
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected a JSON object at the top")
    if type(data.get("format")) is not int or data.get("format") != CATALOG_FORMAT:
        raise CatalogError(f"{where}: unsupported format {data.get('format')!r} (this version reads {CATALOG_FORMAT})")
    models = data.get("models")
    if not isinstance(models, list):
        raise CatalogError(f"{where}: \"models\" must be a list")
    source = data.get("source", {})
    notes = data.get("notes", [])
    if not isinstance(source, dict):
        raise CatalogError(f"{where}: \"source\" must be an object")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise CatalogError(f"{where}: \"notes\" must be a list of strings")
    entries = tuple(_entry(item, f"{where}: model {i + 1}") for i, item in enumerate(models))
    seen: dict[str, str] = {}
    for entry in entries:
        for key in (entry.name, entry.file, *entry.aliases):
            owner = seen.setdefault(key.lower(), entry.name)
            if owner != entry.name:
                raise CatalogError(f"{where}: {key!r} names both {owner} and {entry.name}")
    names = {e.name for e in entries}
    for entry in entries:
        if entry.for_model is not None and entry.for_model not in names:
            raise CatalogError(f"{where}: {entry.name}: for_model {entry.for_model!r} is not in the catalog")
    return Catalog(path=path, entries=entries, source=source, notes=tuple(notes))


def _entry(item: object, where: str) -> CatalogEntry:
    if not isinstance(item, dict):
        raise CatalogError(f"{where}: expected an object")
    name = item.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"

    def text(key: str, pattern: re.Pattern[str] | None = None, optional: bool = False) -> str | None:
        value = item.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise CatalogError(f"{where}: \"{key}\" must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            raise CatalogError(f"{where}: \"{key}\" {value!r} has characters that are not allowed")
        return value

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        value = item.get(key)
        if value not in allowed:
            raise CatalogError(f"{where}: \"{key}\" must be one of {', '.join(allowed)}, not {value!r}")
        return value  # type: ignore[return-value]

    def mirror(key: str) -> Mirror | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise CatalogError(f"{where}: \"{key}\" must be an object with repo and revision, or null")
        repo, revision = value.get("repo"), value.get("revision")
        if not isinstance(repo, str) or not _REPO.fullmatch(repo):
            raise CatalogError(f"{where}: {key}.repo must look like owner/name, not {repo!r}")
        if not isinstance(revision, str) or not _NAME.fullmatch(revision):
            raise CatalogError(f"{where}: {key}.revision must be a branch or commit name, not {revision!r}")
        return Mirror(repo, revision)

    file = text("file", _NAME)
    assert file is not None
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise CatalogError(f"{where}: \"size\" must be a positive whole number of bytes, not {size!r}")
    sha256 = text("sha256", optional=True)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise CatalogError(f"{where}: \"sha256\" must be 64 lowercase hex digits")
    aliases = item.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME.fullmatch(a) for a in aliases):
        raise CatalogError(f"{where}: \"aliases\" must be a list of names")
    kind = choice("kind", KINDS)
    for_model = text("for_model", _NAME, optional=True)
    if kind == "state" and for_model is None:
        raise CatalogError(f"{where}: a state entry needs \"for_model\", the model it was tuned on")
    entry = CatalogEntry(
        name=text("name", _NAME),  # type: ignore[arg-type]
        aliases=tuple(aliases),
        kind=kind,  # type: ignore[arg-type]
        architecture=choice("architecture", ARCHITECTURES),
        description=text("description") or "",
        file=file,
        size=size,
        sha256=sha256,
        file_dtype=choice("file_dtype", tuple(DTYPE_BYTES)),
        huggingface=mirror("huggingface"),
        modelscope=mirror("modelscope"),
        for_model=for_model,
    )
    if entry.huggingface is None and entry.modelscope is None:
        raise CatalogError(f"{where}: needs at least one source (huggingface or modelscope)")
    return entry


# ---------------------------------------------------------------------------- this machine


def models_dir() -> Path:
    """Where downloaded models live: ``RWKV_TUI_MODELS_DIR``, else ``<cache dir>/models``.

    A cache, in the XDG sense: everything here can be downloaded again.
    """
    override = os.environ.get("RWKV_TUI_MODELS_DIR")
    return Path(override).expanduser() if override else cache_dir() / "models"


def local_path(entry: CatalogEntry, directory: Path | None = None) -> Path:
    return (directory or models_dir()) / entry.file


def partial_path(entry: CatalogEntry, directory: Path | None = None) -> Path:
    return (directory or models_dir()) / (entry.file + PARTIAL_SUFFIX)


def is_downloaded(entry: CatalogEntry, directory: Path | None = None) -> bool:
    """The file is in place with the catalog's size (downloads are verified before they get the name)."""
    try:
        return local_path(entry, directory).stat().st_size == entry.size
    except OSError:
        return False


def partial_bytes(entry: CatalogEntry, directory: Path | None = None) -> int:
    """Bytes of an unfinished download that a pull would resume from (0 if none)."""
    try:
        return partial_path(entry, directory).stat().st_size
    except OSError:
        return 0


def resolve_model_path(text: str | os.PathLike[str]) -> Path:
    """A model argument as a path: an existing file, or the downloaded file of a catalog name.

    A catalog name that is not downloaded yet is a one-line error saying how to get it; anything
    else is returned as a path, so the loader reports a missing file in its own words.
    """
    path = Path(text).expanduser()
    if path.exists():
        return path
    try:
        entry = load_catalog().find(str(text))
    except CatalogError:
        if "/" in str(text) or str(text).endswith(".pth"):
            return path  # plainly a path: the loader's "no such file" is the useful error
        raise
    if entry is None:
        return path
    if is_downloaded(entry):
        return local_path(entry)
    resume = " (a partial download will be resumed)" if partial_bytes(entry) else ""
    raise NotDownloadedError(f"{entry.name} is not downloaded yet: run `rwkv-tui models pull {entry.name}`{resume}")
