"""Command line: ``python -m tools.train {data,fit,export,gate} ...`` (see tools/train/README.md)."""

from __future__ import annotations

from tools.train.cli import main

raise SystemExit(main())
