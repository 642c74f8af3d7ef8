"""Writing files so that a crash or a full disk never leaves a half-written file behind.

The data goes to a temporary file in the destination's own directory (so the final rename
stays on one file system and is atomic), is flushed to disk, and only then replaces the
destination. Readers see either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from engine.errors import EngineError

E = TypeVar("E", bound=EngineError)


#: Mode for files that hold private data (conversations, states): readable by the user alone.
PRIVATE = 0o600


def atomic_write_bytes(
    path: str | Path,
    data: bytes,
    error: Callable[[str], E] = EngineError,  # type: ignore[assignment]
    *,
    new_file_mode: int | None = None,
) -> Path:
    """Replace ``path`` with ``data`` atomically; failures raise ``error(one-line message)``."""
    return atomic_write(path, lambda handle: handle.write(data), error, new_file_mode=new_file_mode)


def atomic_write_text(
    path: str | Path, text: str, error: Callable[[str], E] = EngineError  # type: ignore[assignment]
) -> Path:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), error)


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], object],
    error: Callable[[str], E] = EngineError,  # type: ignore[assignment]
    *,
    new_file_mode: int | None = None,
) -> Path:
    """Replace ``path`` with whatever ``write`` writes to the binary file it is given.

    An overwritten file keeps its permissions; a new one gets ``new_file_mode`` (e.g.
    :data:`PRIVATE`), or follows the umask like any file the user creates when that is None.
    The destination is untouched when anything goes wrong (no space, no permission, a
    directory in the way, an exception inside ``write``), and the temporary file is removed.
    OS errors become ``error(one-line message)``; other exceptions propagate unchanged.
    """
    path = Path(path).expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise error(f"cannot write {path}: it is a directory")
    if not directory.is_dir():
        raise error(f"cannot write {path}: folder {directory} does not exist")
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; the result should look like any file the user creates:
        # an overwritten file keeps its permissions, a new one follows the umask unless told.
        if path.exists():
            mode = path.stat().st_mode & 0o7777
        else:
            mode = new_file_mode if new_file_mode is not None else 0o666 & ~_umask()
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_directory(directory)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, which would
    race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows it (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
