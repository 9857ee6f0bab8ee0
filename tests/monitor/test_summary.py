"""The traffic summary `sipwarden monitor --pcap` prints, on the shared real-tool captures."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sipwarden.config import Config
from sipwarden.monitor.summary import summarize_pcaps
from support import shared_path


def run(paths: list[Path], *, json_lines: bool, config: Config | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = summarize_pcaps(
        [str(p) for p in paths], config=config or Config(), json_lines=json_lines, out=out
    )
    return code, out.getvalue()


def capture(name: str) -> Path:
    return shared_path("testdata", "captures", name)


def test_svwar_capture_counts_every_register_and_answer() -> None:
    code, text = run([capture("svwar.pcap")], json_lines=True)
    assert code == 0
    totals, source = (json.loads(line) for line in text.splitlines())
    assert totals["messages"] == 24
    assert totals["malformed"] == 0
    assert source["source"] == "127.0.0.1"
    assert source["requests"] == {"REGISTER": 12}
    assert source["responses"] == {"404": 10, "401": 2}
    assert "friendly-scanner" in source["user_agents"]
    assert source["first_seen"].startswith("2026-11-24T16:31:23.553")


def test_sip_on_an_unconfigured_port_is_found_by_sniffing_or_skipped_when_told() -> None:
    # The responder listens on 15060 (svmap itself binds 5060 locally), so with
    # only 5062 configured the messages are found by sniffing alone.
    elsewhere = {"ports": [5062]}
    sniffing = Config.model_validate({"sip": elsewhere})
    _, sniffed = run([capture("svmap.pcap")], json_lines=True, config=sniffing)
    assert json.loads(sniffed.splitlines()[0])["messages"] == 2
    strict = Config.model_validate({"sip": elsewhere, "monitor": {"sniff_any_port": False}})
    _, skipped = run([capture("svmap.pcap")], json_lines=True, config=strict)
    assert json.loads(skipped.splitlines()[0])["messages"] == 0
    listed = Config.model_validate(
        {"sip": {"ports": [15060]}, "monitor": {"sniff_any_port": False}}
    )
    _, found = run([capture("svmap.pcap")], json_lines=True, config=listed)
    assert json.loads(found.splitlines()[0])["messages"] == 2


def test_human_summary_names_the_offender_and_what_it_did() -> None:
    code, text = run([capture("svcrack.pcap")], json_lines=False)
    assert code == 0
    assert "127.0.0.1" in text
    assert "REGISTER x" in text
    assert "401 x" in text
    assert "friendly-scanner" in text


def test_damaged_capture_is_reported_and_the_rest_still_counted(tmp_path: Path) -> None:
    whole = capture("svwar.pcap").read_bytes()
    damaged = tmp_path / "cut.pcapng"
    damaged.write_bytes(whole[: len(whole) // 2])
    code, text = run([damaged, capture("svmap.pcap")], json_lines=True)
    assert code == 1
    totals = json.loads(text.splitlines()[0])
    assert len(totals["damaged_captures"]) == 1
    assert "packet" in totals["damaged_captures"][0]
    assert 2 < totals["messages"] < 24 + 2  # the packets before the cut, plus svmap's
