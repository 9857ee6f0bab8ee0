"""Each shared capture of a real attack tool yields exactly the events its sidecar names.

The sidecars in ``expected/`` annotate each capture with the events the
monitor must report (kind, rule, source, and account/severity/detail where
they matter); ``../shared/testdata/captures/README.md`` says what each tool
did. One parametrised test runs them all through the real command.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sipwarden.cli import cli
from sipwarden.store.sqlite import SqliteStore
from support import shared_path

EXPECTED = Path(__file__).parent / "expected"
CAPTURES = sorted(path.stem for path in EXPECTED.glob("*.toml"))


def monitor_json(tmp_path: Path, *captures: Path) -> tuple[int, list[dict[str, Any]], Path]:
    store = tmp_path / "events.sqlite3"
    config = tmp_path / "sipwarden.toml"
    config.write_text(f'[store]\npath = "{store}"\n')
    args = ["--config", str(config), "monitor", "--json"]
    for capture in captures:
        args += ["--pcap", str(capture)]
    result = CliRunner().invoke(cli, args)
    records = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    return result.exit_code, records, store


def test_every_shared_capture_has_a_sidecar() -> None:
    shared = {path.stem for path in shared_path("testdata", "captures").glob("*.pcap")}
    assert shared == set(CAPTURES)


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_yields_exactly_the_events_of_its_sidecar(name: str, tmp_path: Path) -> None:
    expected = tomllib.loads((EXPECTED / f"{name}.toml").read_text())["event"]
    code, records, store = monitor_json(
        tmp_path, shared_path("testdata", "captures", f"{name}.pcap")
    )
    assert code == 0
    events = [record for record in records if record["kind"] != "ban"]
    assert len(events) == len(expected), [e["rule"] for e in events]
    for want, got in zip(expected, events, strict=True):
        for key in ("kind", "rule", "source", "account", "severity"):
            if key in want:
                assert got[key] == want[key], (key, got)
        for key, value in want.get("detail", {}).items():
            assert got["detail"][key] == value, (key, got["detail"])
        assert got["evidence"]["messages"], "every event carries its evidence"
        assert got["time"].endswith("Z")
    # The same events are in the embedded store, for later queries and the dashboard.
    with SqliteStore(store) as db:
        assert [e["rule"] for e in db.events()] == [e["rule"] for e in events]


def test_bans_are_short_for_sources_that_never_proved_they_receive_replies(
    tmp_path: Path,
) -> None:
    _, records, _ = monitor_json(tmp_path, shared_path("testdata", "captures", "svmap.pcap"))
    (ban,) = [record for record in records if record["kind"] == "ban"]
    assert ban["source"] == "127.0.0.1"
    assert ban["returnable"] is False  # UDP, no answered challenge: possibly spoofed
    assert ban["duration"] == 60.0


def test_human_report_names_the_offender_what_it_did_and_the_evidence(tmp_path: Path) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text('[store]\npath = ""\n')
    capture = shared_path("testdata", "captures", "svcrack.pcap")
    result = CliRunner().invoke(cli, ["--config", str(config), "monitor", "--pcap", str(capture)])
    assert result.exit_code == 0
    text = result.output
    assert "52 SIP messages" in text
    assert "127.0.0.1  [critical]" in text
    assert "cracking.succeeded" in text
    assert "evidence:" in text
    assert "seen      2026-11-24T16:32:02" in text


def test_a_damaged_capture_is_reported_and_the_rest_still_analysed(tmp_path: Path) -> None:
    whole = shared_path("testdata", "captures", "svwar.pcap").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    code, records, _ = monitor_json(
        tmp_path, cut, shared_path("testdata", "captures", "svmap.pcap")
    )
    assert code == 1
    (damage,) = [record for record in records if record["kind"] == "capture_error"]
    assert "packet" in damage["detail"]
    kinds = {record["kind"] for record in records}
    assert "scanner" in kinds  # svmap, after the damaged file, was still analysed
