"""Each vendor's rule for one update standing for several of one asset (coalescing): later
fields win, maps merge entry by entry, and no merge where one request could not do what the
updates do one after the other."""

from __future__ import annotations

from typing import Any

from consumer.vendors import VENDORS


def update(changes: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {"asset_id": "a-1", **data, "changes": changes}


def test_later_fields_win_and_the_rest_stay() -> None:
    merged = VENDORS["lexful"].merge(
        update({"title": "one", "visibility": "private"}, asset_type="laptop"),
        update({"title": "two"}, asset_type="laptop"),
    )
    assert merged == update({"title": "two", "visibility": "private"}, asset_type="laptop")


def test_another_target_is_another_request() -> None:
    lexful = VENDORS["lexful"]
    assert (
        lexful.merge(update({"a": 1}, asset_type="laptop"), update({"b": 2}, asset_type="phone"))
        is None
    )
    enos = VENDORS["enos"]
    assert (
        enos.merge(
            update({"description": "x"}, org_id="o1"), update({"timezone": "+01:00"}, org_id="o2")
        )
        is None
    )


def test_a_map_merges_entry_by_entry_and_null_still_clears_it() -> None:
    trelica = VENDORS["trelica"]
    first = update({"customFields": {"cost": 1, "owner": "ann"}})
    assert trelica.merge(first, update({"customFields": {"cost": None}})) == update(
        {"customFields": {"cost": None, "owner": "ann"}}
    )
    assert trelica.merge(first, update({"customFields": None})) == update({"customFields": None})


def test_entries_after_a_cleared_map_are_not_one_update() -> None:
    """Null clears every custom field, then one is set: one body would set that one and
    leave the others."""
    trelica = VENDORS["trelica"]
    assert (
        trelica.merge(update({"customFields": None}), update({"customFields": {"cost": 1}})) is None
    )


def test_a_replace_stays_a_replace_and_never_follows_a_patch() -> None:
    enos = VENDORS["enos"]
    replace = update({"description": "d", "tags": {"a": "1"}}, org_id="o", mode="replace")
    patch = update({"tags": {"b": "2"}}, org_id="o")
    assert enos.merge(replace, patch) == update(
        {"description": "d", "tags": {"a": "1", "b": "2"}}, org_id="o", mode="replace"
    )
    assert enos.merge(patch, replace) is None
    assert enos.merge(patch, update({"timezone": "+01:00"}, org_id="o", mode="patch")) is not None


def test_webflow_merges_within_one_locale() -> None:
    webflow = VENDORS["webflow"]
    primary = update({"altText": "a"})
    french = update({"altText": "b", "localeId": "fr"})
    assert webflow.merge(primary, update({"displayName": "x.png"})) == update(
        {"altText": "a", "displayName": "x.png"}
    )
    assert webflow.merge(primary, french) is None
    assert webflow.merge(french, update({"displayName": "y.png", "localeId": "fr"})) == update(
        {"altText": "b", "localeId": "fr", "displayName": "y.png"}
    )
