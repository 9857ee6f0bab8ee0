"""Tests of the log set-up: text and JSON lines, odd values, idempotence."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from sipwarden.logs import LOG_LEVELS, configure_logging

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


# ---------------------------------------------------------------- JSON


def test_json_line_carries_the_fields() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    logging.getLogger("sipwarden.monitor").warning(
        "scanner %s detected", "sipvicious", extra={"src": "192.0.2.7", "count": 42}
    )
    [line] = json_lines(out)
    assert ISO_UTC_MS.fullmatch(line["time"])
    assert line["level"] == "warning"
    assert line["logger"] == "sipwarden.monitor"
    assert line["message"] == "scanner sipvicious detected"
    assert line["src"] == "192.0.2.7"
    assert line["count"] == 42
    assert "exception" not in line


def test_json_time_is_utc_with_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    record_factory = logging.getLogRecordFactory()

    def fixed_time(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = record_factory(*args, **kwargs)
        record.created = 1795671600.123456  # 2026-11-26T05:40:00.123456Z
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", fixed_time)
    logging.getLogger("sipwarden.x").info("tick")
    assert json_lines(out)[0]["time"] == "2026-11-26T05:40:00.123Z"


def test_json_odd_values_never_crash_and_always_parse() -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)
    odd: dict[str, object] = {
        "payload": b"INVITE \xff\x00",
        "surrogate": "user\udcff",
        "nan": float("nan"),
        "huge": 10**5000,
        "nested": {1: [1, {"deep": object()}], "set": {1}},
        "broken": Unprintable(),
        "cycle": [],
    }
    cycle = odd["cycle"]
    assert isinstance(cycle, list)
    cycle.append(cycle)
    logging.getLogger("sipwarden.x").info("from %s", "caf\udce9", extra=odd)
    [line] = json_lines(out)
    assert line["message"] == "from caf\\udce9"
    assert line["payload"] == "b'INVITE \\xff\\x00'"
    assert line["surrogate"] == "user\\udcff"
    assert line["nan"] == "nan"
    assert line["huge"] == "<unprintable int>"
    assert line["nested"]["1"][0] == 1
    assert line["nested"]["1"][1]["deep"].startswith("<object object")
    assert line["nested"]["set"] == "{1}"
    assert line["broken"] == "<unprintable Unprintable>"
    assert isinstance(line["cycle"], list)
    assert out.getvalue().isascii()


def test_json_exception_is_a_string_field() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    try:
        int("bad SIP")
    except ValueError:
        logging.getLogger("sipwarden.x").exception("parse failed")
    [line] = json_lines(out)
    assert line["level"] == "error"
    assert isinstance(line["exception"], str)
    assert "Traceback" in line["exception"]
    assert "ValueError: invalid literal for int() with base 10: 'bad SIP'" in line["exception"]


def test_json_extra_field_cannot_overwrite_a_standard_one() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    logging.getLogger("sipwarden.x").info("m", extra={"time": "forged", "level": "debug"})
    [line] = json_lines(out)
    assert ISO_UTC_MS.fullmatch(line["time"])
    assert line["time_"] == "forged"
    assert line["level"] == "info"
    assert line["level_"] == "debug"


def test_bad_format_arguments_do_not_lose_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's own capture handler raises on this record: take it out for this test.
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    logging.getLogger("sipwarden.x").info("count %d", "not a number")
    [line] = json_lines(out)
    assert line["message"].startswith("count %d [unformattable arguments:")


# ---------------------------------------------------------------- text


def test_text_line_shape() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="text", stream=out)
    logging.getLogger("sipwarden.x").info(
        "ban added", extra={"src": "192.0.2.7", "reason": "friendly scanner", "n": 3}
    )
    line = out.getvalue()
    match = re.fullmatch(r"(\S+) INFO sipwarden\.x: ban added (.*)\n", line)
    assert match is not None, line
    assert ISO_UTC_MS.fullmatch(match.group(1))
    assert match.group(2) == 'src=192.0.2.7 reason="friendly scanner" n=3'


def test_text_escapes_control_characters_from_the_wire() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="text", stream=out)
    evil = "sipvicious\n2026-01-01T00:00:00.000Z INFO forged: \x1b[2J\x9b"
    logging.getLogger("sipwarden.x").info("ua %s", evil, extra={"ua": evil, "raw": b"\xff"})
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "\x1b" not in text
    assert "\x9b" not in text
    assert "\\n2026-01-01" in text
    assert "\\x1b[2J" in text
    assert "raw=\"b'\\\\xff'\"" in text


def test_text_shows_the_traceback() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="text", stream=out)
    try:
        _ = {"a": 1}["k"]
    except KeyError:
        logging.getLogger("sipwarden.x").exception("lookup failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("ERROR sipwarden.x: lookup failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'k'"


def test_text_surrogates_do_not_break_a_strict_stream() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    configure_logging(level="info", fmt="text", stream=stream)
    logging.getLogger("sipwarden.x").info("user %s", "caf\udce9", extra={"u": "\udcff"})
    stream.flush()
    assert "user caf\\udce9" in raw.getvalue().decode("utf-8")


# ---------------------------------------------------------------- set-up


def test_configuring_twice_does_not_duplicate_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="info", fmt="text", stream=first)
    configure_logging(level="info", fmt="json", stream=second)
    configure_logging(level="info", fmt="json", stream=second)
    logging.getLogger("sipwarden.x").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_other_handlers_are_left_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging(level="info", fmt="text", stream=io.StringIO())
    configure_logging(level="info", fmt="text", stream=io.StringIO())
    assert all(handler in root.handlers for handler in before)
    assert len(root.handlers) == len(before) + 1


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_level_filters(level: str) -> None:
    out = io.StringIO()
    configure_logging(level=level.upper(), fmt="json", stream=out)
    log = logging.getLogger("sipwarden.x")
    for name in LOG_LEVELS:
        log.log(logging.getLevelNamesMapping()[name.upper()], name)
    logged = [line["message"] for line in json_lines(out)]
    assert logged == list(LOG_LEVELS[LOG_LEVELS.index(level) :])


def test_default_stream_is_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="info", fmt="text")
    logging.getLogger("sipwarden.x").info("to stderr")
    assert "INFO sipwarden.x: to stderr" in capsys.readouterr().err


def test_unknown_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging(level="loud", fmt="text")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging(level="info", fmt="xml")  # type: ignore[arg-type]
