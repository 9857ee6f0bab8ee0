"""Bans and the in-process ban table: canonical sources, merging, prefix lookups, expiry."""

from __future__ import annotations

import pytest

from sipwarden.enforce.ban import Ban, BanTable, ban_from_decision, canonical_source
from sipwarden.engine.contract import BanDecision


def ban(source: str, since: float = 0.0, until: float = 600.0, **fields: object) -> Ban:
    values: dict[str, object] = {"rule": "r", "reason": "why", "returnable": True, **fields}
    return Ban(source=canonical_source(source), since=since, until=until, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7/32 ", "203.0.113.7"),
        ("203.0.113.9/24", "203.0.113.0/24"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8:0:0:1::5/64", "2001:db8::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),  # one IPv4 host, one spelling
        ("::ffff:198.51.100.0/120", "198.51.100.0/24"),
    ],
)
def test_one_source_has_one_spelling(text: str, canonical: str) -> None:
    assert canonical_source(text) == canonical


@pytest.mark.parametrize("text", ["", "example.com", "1.2.3.4/33", "1.2.3", "::g"])
def test_a_non_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"does not appear|not a valid|Expected|octets|address"):
        canonical_source(text)


def test_a_decision_becomes_a_ban_with_absolute_expiry_and_its_evidence() -> None:
    decision = BanDecision(
        time=100.0,
        source="2001:DB8::7",
        duration=600.0,
        rule="cracking.failures_per_source",
        reason="31 failed authentications",
        returnable=True,
        offence=2,
        evidence=("failures=31; threshold 10 in 60 s", "REGISTER sip:pbx from 2001:db8::7"),
    )
    made = ban_from_decision(decision, origin="node-a")
    assert (made.source, made.since, made.until, made.offence) == ("2001:db8::7", 100.0, 700.0, 2)
    assert made.evidence == decision.evidence
    assert made.origin == "node-a"


def test_records_round_trip_and_bad_records_are_refused() -> None:
    original = ban("2001:db8::/64", evidence=("a", "b"), origin="n1", offence=3)
    assert Ban.from_record(original.record()) == original
    with pytest.raises(ValueError, match="not a ban record"):
        Ban.from_record({"source": "1.2.3.4"})
    with pytest.raises(ValueError, match="not a ban record"):
        Ban.from_record({**original.record(), "evidence": "text"})


def test_merging_keeps_the_later_expiry_and_the_newer_reason() -> None:
    first = ban("198.51.100.1", since=0.0, until=3600.0, reason="old", returnable=False)
    second = ban("198.51.100.1", since=10.0, until=600.0, reason="new", offence=2)
    merged = first.merged(second)
    assert (merged.since, merged.until, merged.reason, merged.offence) == (0.0, 3600.0, "new", 2)
    assert merged.returnable  # proven once is proven
    assert second.merged(first) == merged


def test_the_table_finds_addresses_and_prefixes_and_honours_expiry() -> None:
    table = BanTable()
    table.put(ban("198.51.100.1", until=100.0))
    table.put(ban("2001:db8:1:2::/64", until=100.0))
    table.put(ban("203.0.113.0/24", until=100.0))
    assert table.banned("198.51.100.1", 50.0) is not None
    assert table.banned("198.51.100.2", 50.0) is None
    covering = table.banned("2001:db8:1:2:aaaa::1", 50.0)
    assert covering is not None
    assert covering.source == "2001:db8:1:2::/64"
    assert table.banned("2001:db8:1:3::1", 50.0) is None
    assert table.banned("203.0.113.200", 50.0) is not None
    assert table.banned("not an address", 50.0) is None
    assert table.banned("198.51.100.1", 100.0) is None  # expired, even before expire()
    assert {b.source for b in table.expire(100.0)} == {
        "198.51.100.1",
        "2001:db8:1:2::/64",
        "203.0.113.0/24",
    }
    assert len(table) == 0
    assert table.banned("203.0.113.200", 50.0) is None  # the prefix index is emptied too


def test_removing_one_prefix_keeps_the_others_of_its_length() -> None:
    table = BanTable()
    table.put(ban("203.0.113.0/24"))
    table.put(ban("198.51.100.0/24"))
    table.remove("203.0.113.0/24")
    assert table.banned("198.51.100.9", 1.0) is not None
    assert table.banned("203.0.113.9", 1.0) is None
