"""Logging set-up for the ``sipwarden`` command: human-readable text or JSON lines.

Modules log through the standard library (``logging.getLogger(__name__)``) and pass
structured fields with ``extra={...}``; :func:`configure_logging` decides once, at the
edge, how records are written:

``text``
    ``2026-11-26T05:40:00.123Z INFO sipwarden.monitor: scanner detected src=192.0.2.7``
``json``
    one object per line with ``time``, ``level``, ``logger``, ``message``, the extra
    fields, and ``exception``/``stack`` when present, for a SIEM or a log shipper.

Log records carry attacker-controlled text (User-Agent, From display names, URIs).
Formatting never raises on odd values (bytes, lone surrogates, objects whose ``str``
fails, bad ``%`` arguments), and in text mode control characters are escaped so that a
crafted header cannot forge log lines or drive the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
from typing import Final, Literal, TextIO, get_args

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "LogFormat",
    "LogLevel",
    "TextFormatter",
    "configure_logging",
]

LogLevel = Literal["debug", "info", "warning", "error"]
"""The levels a configuration or the command line may choose."""
LogFormat = Literal["text", "json"]
"""The output formats: ``text`` for people, ``json`` (one object per line) for machines."""

LOG_LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
LOG_FORMATS: Final[tuple[str, ...]] = get_args(LogFormat)

# Attributes every LogRecord has; anything else in a record's __dict__ came from `extra`.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}

_MAX_DEPTH: Final = 8

# C0 controls, DEL and C1 controls (C1 0x9b is a CSI on some terminals) as visible escapes.
_CONTROL_ESCAPES: Final = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))
} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def configure_logging(*, level: str, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Send every log record (ours and our dependencies') to one handler on the root logger.

    ``level`` is a level name (``"debug"``, ``"info"``, ``"warning"``, ``"error"``, any
    case). ``stream`` defaults to whatever ``sys.stderr`` is when a record is written.
    Calling it again replaces the handler it installed before; handlers installed by
    others (pytest's, for example) are left alone.

    Raises:
        ValueError: unknown level name or format.
    """
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StreamHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _StreamHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(levels[level.upper()])


class _StreamHandler(logging.Handler):
    """Writes one formatted record per line; ``None`` means the current ``sys.stderr``.

    Resolving stderr at write time (unlike ``logging.StreamHandler``) keeps the handler
    valid when stderr is replaced, as click's test runner and daemonising both do.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # logging must never take the process down
            self.handleError(record)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...``, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a line (followed by the traceback, if any)."""
        parts = [
            _utc_timestamp(record.created),
            record.levelname,
            f"{record.name}:",
            _escape(_message(record)),
        ]
        for key, value in _extras(record):
            parts.append(f"{_escape(key)}={_text_value(value)}")
        line = " ".join(parts)
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, ASCII only.

    Fields: ``time`` (ISO 8601 UTC, milliseconds, ``Z``), ``level`` (lower case),
    ``logger``, ``message``, ``exception`` and ``stack`` when present, then every
    ``extra`` field. An extra field whose name is taken gets a trailing ``_``. Values
    that JSON cannot represent are written as their ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a JSON line (without the newline)."""
        payload: dict[str, object] = {
            "time": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": _clean(record.name),
            "message": _message(record),
        }
        exception = _exception_text(self, record)
        if exception:
            payload["exception"] = _clean(exception)
        if record.stack_info:
            payload["stack"] = _clean(self.formatStack(record.stack_info))
        for key, value in _extras(record):
            name = key
            while name in payload:
                name += "_"
            payload[name] = _jsonable(value, 0)
        try:
            return json.dumps(payload, ensure_ascii=True, allow_nan=False)
        except (ValueError, TypeError) as exc:  # e.g. an int too long to print
            fallback = {key: payload[key] for key in ("time", "level", "logger", "message")}
            fallback["log_error"] = f"fields dropped: {_safe_str(exc)}"
            return json.dumps(fallback, ensure_ascii=True)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return None


def _utc_timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, tz=dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        return f"{_safe_str(record.msg)} [unformattable arguments: {_safe_str(record.args)}]"
    return _clean(message)


def _extras(record: logging.LogRecord) -> list[tuple[str, object]]:
    return [
        (_safe_str(key), value)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRS
    ]


def _safe_str(value: object) -> str:
    """``str(value)``, or its ``repr``, or a placeholder: never raises."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a broken __str__
        try:
            text = repr(value)
        except Exception:  # and a broken __repr__
            text = f"<unprintable {type(value).__name__}>"
    return _clean(text)


def _clean(text: str) -> str:
    """Replace lone surrogates (undecodable bytes) by a visible ``\\udcXX`` escape."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _escape(text: str) -> str:
    return text.translate(_CONTROL_ESCAPES)


def _text_value(value: object) -> str:
    """A bare word when unambiguous, else a double-quoted string with escapes."""
    text = _safe_str(value)
    if text and text.isprintable() and not any(char in text for char in ' ="\\'):
        return text
    return '"' + _escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _jsonable(value: object, depth: int) -> object:
    """Map a value to what ``json.dumps`` accepts: JSON types as is, the rest through ``str``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # past 64 bits no JSON reader keeps it exact (nor can str())
        return int(value) if value.bit_length() <= 64 else _safe_str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clean(value)
    if depth < _MAX_DEPTH and isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {_safe_str(key): _jsonable(item, depth + 1) for key, item in value.items()}
    return _safe_str(value)
