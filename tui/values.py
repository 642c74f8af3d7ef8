"""Reading numbers that a user typed or a settings file holds.

No Textual here: the music thread's settings use it too.
"""

from __future__ import annotations

import math


def coerce_number(value: object, whole: bool) -> int | float:
    """A JSON number or typed text → int (``whole``) or finite float; ValueError says what is wrong.

    Shared by every settings form and the config file, so a value means the same everywhere.
    """
    if isinstance(value, bool):
        raise ValueError("expected a number, found true/false")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise ValueError(f"expected {kind}, found {text!r}") from None
    if whole:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, found {value!r}")
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"expected a finite number, found {value!r}")
    return float(value)
