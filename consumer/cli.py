"""`group-enriched-consumer`: settings from the environment, JSON logs on stderr, exit codes.

Exit codes: 0 after a clean drain, 1 when start-up or Kafka fails, 2 for a bad setting.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

from consumer import config
from consumer.throttle import Throttle

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # Any logger, ours or a library's: credentials inside a URL never reach the output.
        return config.redact_urls(orjson.dumps(entry, default=str).decode())


class ThrottleFilter(logging.Filter):
    """Pass one record per key every 30 s; librdkafka repeats connection errors many times a second."""

    def __init__(self) -> None:
        super().__init__()
        self._throttle = Throttle(30.0)

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs as ("%s [%s] %s", facility, client name, text): key on the first two.
        key = (record.levelno, *record.args[:2]) if isinstance(record.args, tuple) else (record.levelno, record.msg)
        return self._throttle.allow(key)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("librdkafka").addFilter(ThrottleFilter())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # The Schema Registry client's own copies: one line per registry request, URL included.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpcore2").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:  # an operator tool (inspect, dlq, offsets) or --help; none runs the consumer
        from consumer.ops.cli import main as tool

        return tool(args)
    setup_logging()
    log = logging.getLogger("consumer")
    try:
        settings, overrides = config.load()
        logging.getLogger().setLevel(settings.log_level.upper())
        from consumer.app import run  # imported late: a config error should not pay for librdkafka

        code = run(settings, overrides)
    except config.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except Exception:
        # A bug before the main loop: nothing undelivered was committed, so a restart loses nothing.
        log.exception("consumer crashed")
        code = 1
    # Offsets are committed and the consumer closed. A request still hanging (or a retry still
    # waiting) in a delivery thread would hold the interpreter's exit: leave without it.
    logging.shutdown()
    os._exit(code)
