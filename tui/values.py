"""Reading numbers that a user typed or a settings file holds.

No Textual here: the music thread's settings use it too.
"""

from __future__ import annotations

import math

#: Longest excerpt of a bad value quoted back in a message (a settings file may hold anything).
SHOWN_CHARS = 40


def shown(value: object) -> str:
    """A bad value as a message quotes it: short, on one line, whatever the file held.

    A 400-digit number is "a 400-digit number", not 400 digits; long text is cut with "…".
    """
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**SHOWN_CHARS:
        digits = len(str(abs(value))) if abs(value).bit_length() < 14_000 else None
        return f"a {digits}-digit number" if digits else "a number of thousands of digits"
    text = repr(value)  # repr escapes newlines and control characters
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def coerce_number(value: object, whole: bool) -> int | float:
    """A JSON number or typed text → int (``whole``) or finite float; ValueError says what is wrong.

    Shared by every settings form and the config file, so a value means the same everywhere.
    """
    if isinstance(value, bool):
        raise ValueError("expected a number, found true/false")
    original = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise ValueError(f"expected {kind}, found {shown(text)}") from None
    if whole:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, found {shown(value)}")
        return value
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected a finite number, found {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float, e.g. 1e999 written out in full
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, found {shown(original)}")
    return number
