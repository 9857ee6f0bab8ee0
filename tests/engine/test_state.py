"""Bounded state primitives: sizes, expiry, window counts, /64 keys."""

from __future__ import annotations

from sipwarden.engine.state import BoundedTable, DistinctCounter, SlidingWindow, prefix64


def test_bounded_table_evicts_least_recently_used_and_counts_it() -> None:
    table: BoundedTable[str, int] = BoundedTable(max_entries=3, ttl=10.0)
    for index, key in enumerate("abc"):
        table.put(key, index, float(index))
    table.get_or_create("a", 3.0, lambda: 99)  # touch a: b is now the oldest
    table.put("d", 4, 4.0)
    assert "b" not in table
    assert [key for key, _ in table.items()] == ["c", "a", "d"]
    assert table.evicted == 1


def test_bounded_table_expires_idle_entries() -> None:
    table: BoundedTable[str, int] = BoundedTable(max_entries=10, ttl=5.0)
    table.put("old", 1, 0.0)
    table.put("new", 2, 4.0)
    assert table.expire(6.0) == 1
    assert "new" in table


def test_sliding_window_counts_the_last_window_only() -> None:
    window = SlidingWindow(10.0, buckets=10)
    for second in range(10):
        window.add(float(second))
    assert window.total(9.5) == 10
    assert window.total(14.5) == 5  # buckets 0-4 fell out
    assert window.total(100.0) == 0  # idle for a whole window: all cleared at once


def test_sliding_window_ignores_time_going_backwards() -> None:
    window = SlidingWindow(1.0)
    window.add(5.0)
    assert window.add(4.0) == 2  # a reordered capture packet still counts


def test_distinct_counter_is_bounded_but_keeps_counting() -> None:
    counter = DistinctCounter(limit=4)
    for index in range(10):
        counter.add(str(index), 0.0)
    assert counter.count(0.0, 60.0) == 10
    assert len(counter.sample()) == 4


def test_prefix64_groups_ipv6_and_leaves_ipv4_and_mapped_addresses_alone() -> None:
    assert prefix64("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert prefix64("2001:db8:1:2::ffff") == "2001:db8:1:2::/64"
    assert prefix64("192.0.2.1") is None
    assert prefix64("::ffff:192.0.2.1") is None
    assert prefix64("not-an-address") is None
