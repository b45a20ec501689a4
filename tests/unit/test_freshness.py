"""Per-field last-writer-wins as values: order keys, what each vendor calls a field, and what
an update keeps of itself against what was remembered (consumer/state/freshness.py). The broker and
the processes are in tests/integration/test_freshness.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consumer.events import Event, parse_record
from consumer.schemas import default_schemas
from consumer.state.freshness import decide, learn, newer, order_key, sequence_key, time_key
from tests.samples import event_for


def as_event(document: dict[str, Any]) -> Event:
    parsed = parse_record(json.dumps(document).encode())
    assert isinstance(parsed, Event), parsed
    return parsed


def update(
    vendor: str, changes: dict[str, Any], mode: str | None = None, **attributes: Any
) -> Event:
    document = event_for(vendor)
    document["data"]["changes"] = changes
    if mode is not None:
        document["data"]["mode"] = mode
    document.pop("time", None)
    document.update(attributes)
    return as_event(document)


def remembered(*pairs: tuple[Event, str]) -> dict[str, str]:
    """The field map after delivering these (event, key) updates in turn."""
    snapshot: dict[str, str] | None = None
    for event, key in pairs:
        snapshot = learn(snapshot, decide(event, key, snapshot))
    return snapshot or {}


S1, S2, S3 = sequence_key("1"), sequence_key("2"), sequence_key("3")


# --- order keys ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("older", "later"),
    [
        ("9", "10"),  # decimal integers compare as numbers, not as text
        ("0099", "100"),  # leading zeros do not count
        ("18446744073709551616", "18446744073709551617"),  # beyond 64 bits
        ("999999", "a"),  # every integer comes before every other sequence
        ("A", "a"),  # the others by Unicode code point
        ("2026-11-23T10:00:00Z#1", "2026-11-23T10:00:00Z#2"),
        ("abc", "abd"),
    ],
)
def test_sequences_are_ordered_as_documented(older: str, later: str) -> None:
    assert newer(sequence_key(later), sequence_key(older))
    assert not newer(sequence_key(older), sequence_key(later))


def test_equal_keys_are_not_newer_so_the_later_update_is_delivered() -> None:
    assert sequence_key("007") == sequence_key("7")
    assert not newer(sequence_key("7"), sequence_key("007"))
    same = time_key("2026-11-23T10:00:00Z")
    assert same is not None and not newer(same, same)


def test_times_compare_as_instants_to_the_nanosecond() -> None:
    utc = time_key("2026-11-23T10:00:00Z")
    assert utc == time_key("2026-11-23T11:30:00+01:30") == time_key("2026-11-23t10:00:00.000z")
    earlier = time_key("2026-11-23T10:00:00.000000001Z")
    later = time_key("2026-11-23T10:00:00.000000002Z")
    assert earlier and later and utc and newer(later, earlier) and newer(earlier, utc)
    west = time_key("2026-11-23T05:00:01-05:00")  # one second after 10:00:00Z
    assert west and newer(west, utc)
    assert time_key("0001-01-01T00:00:00+14:00") is not None  # before day one: still ordered
    assert time_key("2026-02-30T10:00:00Z") is None


def test_keys_of_different_kinds_never_compare() -> None:
    by_time = time_key("2099-01-01T00:00:00Z")
    assert by_time is not None
    assert not newer(by_time, S1) and not newer(S1, by_time)


def test_sequence_wins_over_time_and_neither_means_no_key() -> None:
    both = update("trelica", {"notes": "x"}, sequence="5", time="2026-11-23T10:00:00Z")
    assert order_key(both) == sequence_key("5")
    timed = update("trelica", {"notes": "x"}, time="2026-11-23T10:00:00Z")
    assert order_key(timed) == time_key("2026-11-23T10:00:00Z")
    assert order_key(update("trelica", {"notes": "x"})) is None


def test_sequence_is_read_in_both_modes_and_an_integer_is_its_decimal_string() -> None:
    assert update("trelica", {"notes": "x"}, sequence=42).sequence == "42"
    data = event_for("trelica")["data"]
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-1"),
        ("ce_source", b"cmdb://x"),
        ("ce_type", b"assetsync.asset.update"),
        ("ce_vendor", b"trelica"),
        ("ce_sequence", b"0042"),
    ]
    binary = parse_record(json.dumps(data).encode(), headers)
    assert isinstance(binary, Event) and binary.sequence == "0042"


@pytest.mark.parametrize("bad", ["", "a\nb", -1, 2**63, 1.5, True, "9" * 129])
def test_a_malformed_sequence_is_an_invalid_event(bad: Any) -> None:
    document = {**event_for("trelica"), "sequence": bad}
    parsed = parse_record(json.dumps(document).encode())
    assert not isinstance(parsed, Event)
    assert [e.pointer for e in parsed.errors] == ["/sequence"]
    schemas = default_schemas()  # both validators agree on it
    assert schemas.fast.is_valid(document) == schemas.reference.is_valid(document)


# --- what a field is, per vendor -------------------------------------------------------------
def test_an_older_update_keeps_only_the_fields_nobody_changed_since() -> None:
    newer_one = update("trelica", {"notes": "new", "status": "Deployed"})
    older = update("trelica", {"notes": "old", "locationName": "Paris"})
    verdict = decide(older, S1, remembered((newer_one, S2)))
    assert verdict.event.data["changes"] == {"locationName": "Paris"}
    assert verdict.stale == ["notes"] and verdict.fields == ["locationName"]
    assert not verdict.nothing_left
    assert older.data["changes"] == {"notes": "old", "locationName": "Paris"}  # not mutated


def test_an_older_update_whose_fields_were_all_changed_since_is_stale() -> None:
    snapshot = remembered((update("trelica", {"notes": "new", "status": "A"}), S2))
    verdict = decide(update("trelica", {"notes": "old"}), S1, snapshot)
    assert verdict.nothing_left and verdict.stale == ["notes"]
    again = decide(update("trelica", {"notes": "same key"}), S2, snapshot)
    assert again.stale == [] and again.fields == ["notes"]  # equal key: delivered


@pytest.mark.parametrize(
    ("vendor", "newer_changes", "older_changes", "left"),
    [
        (
            "trelica",
            {"customFields": {"cost": 5}},
            {"customFields": {"cost": 1, "owner": "ann"}},
            {"customFields": {"owner": "ann"}},
        ),
        (
            "autodesk",
            {"customAttributes": {"ca1": "x"}},
            {"customAttributes": {"ca1": "y", "ca2": "z"}, "barcode": "b"},
            {"customAttributes": {"ca2": "z"}, "barcode": "b"},
        ),
        (
            "enos",
            {"attributes": {"power": 5}, "tags": {"year": "2001"}},
            {"attributes": {"power": 1, "area": 2}, "tags": {"year": "2000", "site": "s"}},
            {"attributes": {"area": 2}, "tags": {"site": "s"}},
        ),
        (  # a map whose every entry is newer goes as a whole
            "trelica",
            {"customFields": {"cost": 5}, "notes": "n"},
            {"customFields": {"cost": 1}, "status": "s"},
            {"status": "s"},
        ),
    ],
)
def test_map_entries_are_fields_of_their_own(
    vendor: str, newer_changes: dict[str, Any], older_changes: dict[str, Any], left: Any
) -> None:
    snapshot = remembered((update(vendor, newer_changes), S2))
    assert decide(update(vendor, older_changes), S1, snapshot).event.data["changes"] == left


def test_a_list_or_an_object_outside_the_maps_is_one_value() -> None:
    methods = [{"type": "Email", "value": "a@example.com"}]
    snapshot = remembered((update("lexful", {"contact_methods": methods}), S2))
    older = update("lexful", {"contact_methods": [], "title": "CTO"})
    assert decide(older, S1, snapshot).event.data["changes"] == {"title": "CTO"}
    name = {"defaultValue": "n", "i18nValue": {"en_US": "English"}}
    enos = remembered((update("enos", {"name": name}), S2))
    other_locale = {"defaultValue": "n", "i18nValue": {"fr_FR": "Français"}}
    assert decide(update("enos", {"name": other_locale}), S1, enos).nothing_left


def test_webflow_alt_text_is_one_field_per_locale_and_locale_id_stays() -> None:
    locale = "65427cf400e02b306eaa04a0"
    snapshot = remembered((update("webflow", {"altText": "Un chien", "localeId": locale}), S2))
    primary = update("webflow", {"altText": "A dog", "displayName": "dog.png"})
    assert decide(primary, S1, snapshot).stale == []  # the primary locale is another field
    french = update("webflow", {"altText": "Chien", "displayName": "d.png", "localeId": locale})
    verdict = decide(french, S1, snapshot)
    assert verdict.event.data["changes"] == {"displayName": "d.png", "localeId": locale}
    alone = update("webflow", {"altText": "Chien", "localeId": locale})
    assert decide(alone, S1, snapshot).nothing_left  # localeId alone sets nothing


# --- EnOS replace resets every field ---------------------------------------------------------
def test_a_replace_resets_every_field_so_an_older_patch_of_any_field_is_stale() -> None:
    replace = update("enos", {"attributes": {"power": 5}}, mode="replace")
    snapshot = remembered((update("enos", {"timezone": "+08:00"}), S1), (replace, S2))
    assert snapshot == {"*": S2}
    older_patch = update("enos", {"description": "d", "tags": {"k": "v"}})
    assert decide(older_patch, S1, snapshot).nothing_left
    assert decide(older_patch, S3, snapshot).stale == []


def test_a_replace_older_than_any_field_goes_as_a_patch_of_its_own_fresh_fields() -> None:
    snapshot = remembered((update("enos", {"tags": {"site": "s"}}), S3))
    replace = update("enos", {"attributes": {"power": 1}, "timezone": "UTC"}, mode="replace")
    verdict = decide(replace, S2, snapshot)
    # as a replace it would clear the newer tag it does not name
    assert verdict.event.data["mode"] == "patch" and not verdict.reset
    assert verdict.event.data["changes"] == {"attributes": {"power": 1}, "timezone": "UTC"}
    assert learn(snapshot, verdict)["tags.site"] == S3  # the newer field is still remembered
    fresh = decide(replace, sequence_key("4"), snapshot)
    assert fresh.reset and fresh.event.data["mode"] == "replace"


# --- the read-ahead of a polled batch -------------------------------------------------------
# Freshness.check reads an asset's map from, in turn: what was learned and not written, the
# maps used last, what read_ahead() read for the polled batch, the store. A map read ahead must
# never be used once the asset learned something newer, even after the maps used last forgot it.
def _freshness(tmp_path: Any) -> Any:
    from kafka.structs import TopicPartition

    from consumer.config import parse_config
    from consumer.state.freshness import Freshness
    from consumer.state.freshness_store import PartitionStore

    raw = {"kafka": {"topic": "changes"}, "freshness": {"store_dir": str(tmp_path)}}
    freshness = Freshness(parse_config(raw, {}), partitions=1)
    freshness._stores[0] = PartitionStore(tmp_path, 0, 256)
    freshness._recent_max = 0  # the maps used last forget at once: the store or nothing
    freshness._finish = lambda tp, offset: None
    return freshness, TopicPartition("changes", 0)


def _written(freshness: Any) -> None:
    """What the changelog write does to the store (the records themselves are not sent)."""
    batch, freshness._dirty = freshness._dirty, {}
    freshness._store_batch(batch)


def _trelica(sequence: str, *fields: str) -> Event:
    return update("trelica", dict.fromkeys(fields, f"v{sequence}"), sequence=sequence)


def test_a_map_read_ahead_is_not_used_once_the_asset_learned_something_newer(
    tmp_path: Any,
) -> None:
    asyncio.run(_read_ahead_then_learned(tmp_path, learned_first=False))


def test_an_asset_learned_and_not_written_yet_is_not_read_ahead(tmp_path: Any) -> None:
    asyncio.run(_read_ahead_then_learned(tmp_path, learned_first=True))


async def _read_ahead_then_learned(tmp_path: Any, learned_first: bool) -> None:
    """Update 5 sets notes and status, update 7 status only, so that the map after 7 keeps
    notes at 5 only if 7 was checked against what 5 taught: an update 4 of notes is stale."""
    freshness, tp = _freshness(tmp_path)
    try:
        five = await freshness.check(0, _trelica("5", "notes", "status"))
        if learned_first:  # learned, not written, when the next batch is polled
            freshness.learned(tp, 0, five)
        freshness.read_ahead(0, [_trelica("7", "status")])  # the store has nothing yet
        if not learned_first:  # the batch was polled while 5 was being delivered
            freshness.learned(tp, 0, five)
        _written(freshness)
        seven = await freshness.check(0, _trelica("7", "status"))
        freshness.learned(tp, 1, seven)
        _written(freshness)
        late = await freshness.check(0, _trelica("4", "notes"))
        assert late is not None and late.nothing_left, late
    finally:
        freshness._stores[0].discard()
        freshness._dir.close()


def test_a_replica_starting_at_the_same_moment_never_removes_anothers_store_dir(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas sharing ``store_dir`` started together: the second one's clean-up ran
    between the first one making its directory and locking it, took it for abandoned and
    removed it; the first one's store files could then never be opened (a fresh-clone CI run:
    "unable to open database file", its partitions' restore retried forever)."""
    import fcntl

    from consumer.state import freshness_store

    real_flock = fcntl.flock
    others: list[freshness_store.StoreDir] = []

    def flock_after_another_start(handle: Any, operation: int) -> None:
        monkeypatch.setattr(fcntl, "flock", real_flock)
        others.append(freshness_store.StoreDir(str(tmp_path)))  # starts in the gap
        real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_another_start)
    first = freshness_store.StoreDir(str(tmp_path))
    assert first.path.is_dir() and others[0].path.is_dir()
    assert first.path != others[0].path
    freshness_store.PartitionStore(first.path, 0, 1024).db.execute("SELECT 1")
    first.close()
    others[0].close()
