"""Append a dated entry to ``bench/RESULTS.md`` (shared by the benchmark scripts).

Append only: other engineers' runs write to the same file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def append_results(title: str, body: str, *, command: str, machine: str) -> Path:
    """Write ``## TITLE (date)``, the machine, the command (as given, e.g. in backticks)
    and ``body`` to the end of :data:`RESULTS`; return its path."""
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    entry = f"\n## {title} ({date})\n\nMachine: {machine}\n\nCommand: {command}\n\n{body}\n"
    with open(RESULTS, "a") as handle:
        handle.write(entry)
    return RESULTS
