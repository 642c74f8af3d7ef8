"""Separating a G1 model's ``<think>…</think>`` reasoning from its answer while the text streams.

A tag can arrive split over several deltas ("<thi", "nk>"), so the splitter holds back any tail
that might still become a tag and releases it once it is known not to be one. The reply text a
G1 prompt produces starts with "<think" (the prompt supplied it), the model adds ">" itself.
"""

from __future__ import annotations

from typing import Literal

Section = Literal["think", "answer"]

OPEN_TAG = "<think"
CLOSE_TAG = "</think>"


class ThinkSplitter:
    """Feed reply deltas; receive (section, text) pieces in order."""

    def __init__(self) -> None:
        self._mode: Literal["start", "think", "answer"] = "start"
        self._held = ""
        #: Skip whitespace right after the closing tag: the answer starts on its own.
        self._trim_answer_start = False
        self.think_text = ""
        self.answer_text = ""

    @property
    def in_think(self) -> bool:
        return self._mode == "think"

    def feed(self, delta: str) -> list[tuple[Section, str]]:
        self._held += delta
        pieces: list[tuple[Section, str]] = []
        while self._held:
            if self._mode == "start":
                stripped = self._held.lstrip()
                if not stripped:
                    return pieces  # only whitespace so far: undecided
                if stripped.startswith(OPEN_TAG):
                    rest = stripped[len(OPEN_TAG):]
                    if not rest:
                        return pieces  # "<think" alone: wait for ">" or content
                    self._held = rest[1:] if rest.startswith(">") else rest
                    self._mode = "think"
                    continue
                if OPEN_TAG.startswith(stripped):
                    return pieces  # "<thi": could still become the tag
                self._mode = "answer"
                continue
            if self._mode == "think":
                index = self._held.find(CLOSE_TAG)
                if index >= 0:
                    self._add(pieces, "think", self._held[:index])
                    self._held = self._held[index + len(CLOSE_TAG):]
                    self._mode = "answer"
                    self._trim_answer_start = True
                    continue
                keep = _partial_tag_suffix(self._held, CLOSE_TAG)
                self._add(pieces, "think", self._held[:len(self._held) - keep])
                self._held = self._held[len(self._held) - keep:]
                return pieces
            # answer
            text = self._held
            if self._trim_answer_start:
                text = text.lstrip()
                if not text:
                    self._held = ""
                    return pieces
                self._trim_answer_start = False
            self._add(pieces, "answer", text)
            self._held = ""
        return pieces

    def finish(self) -> list[tuple[Section, str]]:
        """Release whatever is held at the end of the reply."""
        pieces: list[tuple[Section, str]] = []
        held, self._held = self._held, ""
        if self._mode == "think":
            self._add(pieces, "think", held)
        elif self._mode == "start":
            stripped = held.lstrip()
            if stripped.startswith(OPEN_TAG):
                rest = stripped[len(OPEN_TAG):]
                self._add(pieces, "think", rest[1:] if rest.startswith(">") else rest)
            else:
                self._add(pieces, "answer", held)
        else:
            self._add(pieces, "answer", held.lstrip() if self._trim_answer_start else held)
        return pieces

    def _add(self, pieces: list[tuple[Section, str]], section: Section, text: str) -> None:
        if not text:
            return
        if section == "think":
            self.think_text += text
        else:
            self.answer_text += text
        pieces.append((section, text))


def split_reply(text: str) -> tuple[str, str]:
    """(think, answer) of a complete reply."""
    splitter = ThinkSplitter()
    splitter.feed(text)
    splitter.finish()
    return splitter.think_text, splitter.answer_text


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
