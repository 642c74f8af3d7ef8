"""Byte counts as people read them, shared by the engine's messages, the CLI and the app."""

from __future__ import annotations


def human_bytes(count: int) -> str:
    """``1536`` → ``"1.5 KB"`` (binary multiples, one decimal; bytes stay whole)."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
