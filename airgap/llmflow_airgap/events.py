"""What the bundle commands tell people and CI while they run.

People get plain text on stderr and a progress line whose numbers only ever move forward
(a resumed download starts from what is already on disk, never from zero again). CI gets one
JSON object per line on stdout (`--json`), so a pipeline can follow a multi-hour build without
scraping text. Both come from the same calls, so the two views never disagree.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

# Plain-text progress is printed at most this often, so a log file stays readable.
_PROGRESS_INTERVAL_S = 1.0


@dataclass
class Reporter:
    """Sink for events; `json_lines=True` for CI, plain text for people."""

    json_lines: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    quiet: bool = False
    _high_water: dict[str, int] = field(default_factory=dict)
    _last_print: float = 0.0

    def event(self, event_type: str, message: str = "", /, **fields: Any) -> None:
        """One step happened (`image.resolved`, `blob.stored`, `verify.failed` ...)."""
        if self.json_lines:
            record = {"event": event_type, **fields}
            if message:
                record["message"] = message
            self.out.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            self.out.flush()
        elif message and not self.quiet:
            self.err.write(message + "\n")
            self.err.flush()

    def progress(self, task: str, done: int, total: int) -> None:
        """Bytes done out of total for one task; never reported lower than before."""
        done = max(done, self._high_water.get(task, 0))
        self._high_water[task] = done
        if self.json_lines or self.quiet:
            return
        now = time.monotonic()
        if done < total and now - self._last_print < _PROGRESS_INTERVAL_S:
            return
        self._last_print = now
        percent = 100.0 * done / total if total else 100.0
        self.err.write(f"  {task}: {_human(done)} / {_human(total)} ({percent:5.1f}%)\n")
        self.err.flush()


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_size(size: int) -> str:
    """A byte count the way people read it (`1.5 GiB`)."""
    return _human(size)
