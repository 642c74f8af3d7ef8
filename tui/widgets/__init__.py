"""Reusable Textual widgets: each in its own module, styled with theme variables."""
