"""Each vendor's rule for one update standing for several of one asset (coalescing): later
fields win, maps merge entry by entry, and no merge where one request could not do what the
updates do one after the other."""

from __future__ import annotations

from typing import Any

from consumer.vendors import VENDORS


def update(changes: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {"asset_id": "a-1", **data, "changes": changes}


def merge(vendor: str, first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any] | None:
    """As the pipeline takes them: ``later`` joins the request if it follows ``first``'s
    target (Pipeline._run), then folds into it (Pipeline._merge); None where it does not."""
    client = VENDORS[vendor]
    return client.fold(first, later) if client.follows(client.target(first), later) else None


def test_later_fields_win_and_the_rest_stay() -> None:
    merged = merge(
        "lexful",
        update({"title": "one", "visibility": "private"}, asset_type="laptop"),
        update({"title": "two"}, asset_type="laptop"),
    )
    assert merged == update({"title": "two", "visibility": "private"}, asset_type="laptop")


def test_another_target_is_another_request() -> None:
    assert (
        merge("lexful", update({"a": 1}, asset_type="laptop"), update({"b": 2}, asset_type="phone"))
        is None
    )
    assert (
        merge(
            "enos",
            update({"description": "x"}, org_id="o1"),
            update({"timezone": "+01:00"}, org_id="o2"),
        )
        is None
    )


def test_a_map_merges_entry_by_entry_and_null_still_clears_it() -> None:
    first = update({"customFields": {"cost": 1, "owner": "ann"}})
    assert merge("trelica", first, update({"customFields": {"cost": None}})) == update(
        {"customFields": {"cost": None, "owner": "ann"}}
    )
    assert merge("trelica", first, update({"customFields": None})) == update({"customFields": None})


def test_entries_after_a_cleared_map_are_not_one_update() -> None:
    """Null clears every custom field, then one is set: one body would set that one and
    leave the others."""
    assert (
        merge("trelica", update({"customFields": None}), update({"customFields": {"cost": 1}}))
        is None
    )


def test_a_replace_stays_a_replace_and_never_follows_a_patch() -> None:
    replace = update({"description": "d", "tags": {"a": "1"}}, org_id="o", mode="replace")
    patch = update({"tags": {"b": "2"}}, org_id="o")
    assert merge("enos", replace, patch) == update(
        {"description": "d", "tags": {"a": "1", "b": "2"}}, org_id="o", mode="replace"
    )
    assert merge("enos", patch, replace) is None
    assert (
        merge("enos", patch, update({"timezone": "+01:00"}, org_id="o", mode="patch")) is not None
    )


def test_webflow_merges_within_one_locale() -> None:
    primary = update({"altText": "a"})
    french = update({"altText": "b", "localeId": "fr"})
    assert merge("webflow", primary, update({"displayName": "x.png"})) == update(
        {"altText": "a", "displayName": "x.png"}
    )
    assert merge("webflow", primary, french) is None
    assert merge("webflow", french, update({"displayName": "y.png", "localeId": "fr"})) == update(
        {"altText": "b", "localeId": "fr", "displayName": "y.png"}
    )
