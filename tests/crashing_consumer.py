"""The real CLI with one fault injected from outside: the main loop raises once a trigger file exists.

Run as `python -m tests.crashing_consumer` (see `harness.process.ConsumerProcess(module=...)`):
the production code stays free of test hooks; this wrapper patches `App._step` before `main()`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from consumer import app
from consumer.cli import main

TRIGGER = Path(os.environ["CRASH_TRIGGER_FILE"])
_step = app.App._step


def _failing_step(self: app.App) -> None:
    if TRIGGER.exists():
        logging.getLogger("tests.crash").warning("injecting an exception into the main loop")
        raise RuntimeError("injected failure")
    _step(self)


app.App._step = _failing_step  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
