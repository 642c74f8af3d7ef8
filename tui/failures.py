"""Turning an unexpected exception on a background thread into one line for the user.

Both the engine thread and the music thread must survive their own bugs: the user sees one
line, and the traceback, which a notification cannot show, goes to the app's log file.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

log = logging.getLogger(__name__)


def report_failure(exc: BaseException, what: str, log_path: Path | None) -> str:
    """``what: ExcType: first line`` (plus where the details are), with the traceback logged."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    message = f"{what}: {type(exc).__name__}" + (f": {first}" if first else "")
    if log_path is not None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
                handle.write("".join(traceback.format_exception(exc)) + "\n")
            message += f" (details in {log_path})"
        except OSError:
            pass
    log.error(what, exc_info=exc)
    return message
