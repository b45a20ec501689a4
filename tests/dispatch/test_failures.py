"""What the dispatcher does with each answer: retry, refresh, split, or give up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from consumer.config import Config, DispatchConfig, parse_config
from consumer.delivery.http import HttpClient, HttpRequest
from consumer.errors import ConfigError, RetryableError
from consumer.reasons import Reason
from tests.dispatch.conftest import FAST_RETRY, deliver, make_config, valid
from tests.fakes import FakeVendors, Reply

SINGLE = ["lexful", "webflow", "trelica", "enos", "autodesk"]


def test_429_retry_after_is_honoured_as_a_floor(fakes: FakeVendors) -> None:
    fakes.webflow.fail_next(
        Reply(429, {"Retry-After": "1"}, {"code": "too_many_requests", "message": "slow down"})
    )
    [outcome] = deliver(make_config(fakes), valid("webflow"))
    assert outcome.delivered and outcome.attempts == 2, outcome
    first, second = fakes.webflow.updates()
    assert second.at - first.at >= 1.0


@pytest.mark.parametrize("vendor", SINGLE)
@pytest.mark.parametrize("status", [409, 500, 503])
def test_conflict_and_server_errors_are_retried(
    fakes: FakeVendors, vendor: str, status: int
) -> None:
    fakes.fakes[vendor].fail_next(Reply(status))
    [outcome] = deliver(make_config(fakes), valid(vendor))
    assert outcome.delivered, outcome
    assert outcome.attempts == 2
    assert len(fakes.fakes[vendor].updates()) == 2


@pytest.mark.parametrize("vendor", SINGLE)
def test_gives_up_after_max_attempts(fakes: FakeVendors, vendor: str) -> None:
    fakes.fakes[vendor].always = Reply(500)
    [outcome] = deliver(make_config(fakes, retry={"max_attempts": 3}), valid(vendor))
    assert not outcome.delivered
    assert outcome.reason is Reason.RETRIES_EXHAUSTED
    assert (outcome.attempts, outcome.status) == (3, 500)
    assert len(fakes.fakes[vendor].updates()) == 3


def test_gives_up_when_retry_after_is_past_the_deadline(fakes: FakeVendors) -> None:
    fakes.webflow.always = Reply(429, {"Retry-After": "60"})
    config = make_config(fakes, retry={"max_elapsed_s": 2})
    [outcome] = deliver(config, valid("webflow"))
    assert outcome.reason is Reason.RETRIES_EXHAUSTED
    assert len(fakes.webflow.updates()) == 1  # no early retry before the server's time


@pytest.mark.parametrize("vendor", SINGLE)
@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_are_dead_lettered_at_once(fakes: FakeVendors, vendor: str, status: int) -> None:
    fakes.fakes[vendor].fail_next(Reply(status, body={"error": "nope"}))
    [outcome] = deliver(make_config(fakes), valid(vendor))
    assert (outcome.delivered, outcome.reason) == (False, Reason.VENDOR_REJECTED)
    assert (outcome.attempts, outcome.status) == (1, status)
    assert "nope" in outcome.error


@pytest.mark.parametrize("code", [12958, 12404, 99400, 99403, 99404])
def test_enos_error_codes_are_permanent(fakes: FakeVendors, code: int) -> None:
    fakes.enos.fail_next(Reply(200, body={"code": code, "msg": "attribute verification"}))
    [outcome] = deliver(make_config(fakes), valid("enos"))
    assert outcome.reason is Reason.VENDOR_REJECTED
    assert f"EnOS code {code}" in outcome.error
    assert outcome.attempts == 1


def test_enos_99500_is_retried(fakes: FakeVendors) -> None:
    fakes.enos.fail_next(Reply(200, body={"code": 99500, "msg": "internal"}))
    [outcome] = deliver(make_config(fakes), valid("enos"))
    assert outcome.delivered and outcome.attempts == 2


@pytest.mark.parametrize("vendor", ["trelica", "enos", "lexful", "autodesk"])
def test_expired_token_is_refreshed_once_and_the_update_goes_through(
    fakes: FakeVendors, vendor: str
) -> None:
    config = make_config(fakes, lexful_api_key=True, autodesk_refresh=True)
    fake = fakes.fakes[vendor]

    async def scenario() -> list[bool]:
        from consumer.delivery.dispatcher import Dispatcher

        dispatcher = Dispatcher(config)
        try:
            first = await dispatcher.deliver(valid(vendor))
            fake.revoke_tokens()  # the cached token expires at the vendor
            second = await dispatcher.deliver(valid(vendor))
            return [first.delivered, second.delivered]
        finally:
            await dispatcher.close()

    import asyncio

    assert asyncio.run(scenario()) == [True, True]
    assert fake.token_requests == 2


def test_static_token_refused_is_auth_failed(fakes: FakeVendors) -> None:
    fakes.webflow.revoke_tokens()
    [outcome] = deliver(make_config(fakes), valid("webflow"))
    assert outcome.reason is Reason.AUTH_FAILED
    assert outcome.status == 401


def test_wrong_client_secret_is_auth_failed_without_retries(fakes: FakeVendors) -> None:
    config = make_config(fakes)
    settings = dict(config.connections["trelica"]["default"].settings)
    from consumer.config import Connection, Secret

    settings["client_secret"] = Secret("wrong")
    config.connections["trelica"]["default"] = Connection(  # type: ignore[index]
        "trelica", "default", fakes.base_url("trelica"), settings
    )
    [outcome] = deliver(config, valid("trelica"))
    assert outcome.reason is Reason.AUTH_FAILED
    assert fakes.trelica.updates() == []
    fakes.trelica.violations.clear()  # the fake rightly logged the bad credentials


def test_autodesk_batch_with_one_bad_asset_delivers_the_others(fakes: FakeVendors) -> None:
    events = [
        valid("autodesk", asset_id=f"286c1ef7-70f6-4ebd-8f87-e7f591ec6b{i:02x}") for i in range(10)
    ]
    bad = events[6].data["asset_id"]
    fakes.autodesk.bad_assets.add(bad)
    outcomes = deliver(make_config(fakes), *events)
    assert [o.delivered for o in outcomes] == [i != 6 for i in range(10)]
    assert outcomes[6].reason is Reason.VENDOR_REJECTED and outcomes[6].status == 400
    assert fakes.autodesk.batch_sizes[0] == 10  # sent together first, then split


def test_autodesk_429_retries_the_whole_batch(fakes: FakeVendors) -> None:
    fakes.autodesk.fail_next(Reply(429, {"Retry-After": "0"}))
    events = [
        valid("autodesk", asset_id=f"286c1ef7-70f6-4ebd-8f87-e7f591ec6b{i:02x}") for i in range(3)
    ]
    outcomes = deliver(make_config(fakes), *events)
    assert all(o.delivered and o.attempts == 2 for o in outcomes), outcomes


def test_unknown_connection_is_its_own_reason(fakes: FakeVendors) -> None:
    event = valid("webflow")
    object.__setattr__(event, "connection", "eu")
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.reason is Reason.UNKNOWN_CONNECTION


def test_connection_refused_is_retried_then_exhausted(fakes: FakeVendors) -> None:
    from consumer.config import parse_config
    from consumer.local.local_kafka import free_port

    connections = fakes.connections()
    connections["webflow"]["default"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    config = parse_config(
        {
            "connections": connections,
            "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02},
        },
        environ={},
    )
    [outcome] = deliver(config, valid("webflow"))
    assert outcome.reason is Reason.RETRIES_EXHAUSTED
    assert outcome.attempts == 3
    assert "connection error" in outcome.error


def test_read_timeout_is_retried(fakes: FakeVendors) -> None:
    fakes.trelica.fail_next(Reply(200, delay_s=1.0))
    config = make_config(fakes, dispatch={"read_timeout_s": 0.3})
    [outcome] = deliver(config, valid("trelica"))
    assert outcome.delivered and outcome.attempts == 2, outcome


def test_connection_reset_is_retried(fakes: FakeVendors) -> None:
    fakes.lexful.fail_next(Reply(reset=True))
    [outcome] = deliver(make_config(fakes), valid("lexful"))
    assert outcome.delivered and outcome.attempts == 2, outcome


def with_retry_statuses(fakes: FakeVendors, vendor: str, statuses: Sequence[object]) -> Config:
    connections = fakes.connections()
    connections[vendor]["default"]["retry_statuses"] = list(statuses)
    return parse_config({"connections": connections, "retry": FAST_RETRY}, environ={})


@pytest.mark.parametrize("vendor", SINGLE)
def test_a_connection_chooses_which_statuses_are_retried(fakes: FakeVendors, vendor: str) -> None:
    """retry_statuses [429, 404]: a 404 is retried, a 503 is given up at once."""
    config = with_retry_statuses(fakes, vendor, [429, 404])
    fakes.fakes[vendor].fail_next(Reply(404))
    [retried] = deliver(config, valid(vendor))
    assert retried.delivered and retried.attempts == 2, retried
    fakes.fakes[vendor].fail_next(Reply(503))
    [refused] = deliver(config, valid(vendor))
    assert (refused.delivered, refused.reason, refused.attempts) == (
        False,
        Reason.VENDOR_REJECTED,
        1,
    )


def test_status_classes_expand_and_bad_statuses_name_the_key(fakes: FakeVendors) -> None:
    config = with_retry_statuses(fakes, "trelica", ["5xx", 429])
    connection = config.connection("trelica", "default")
    assert connection is not None
    assert connection.get("retry_statuses") == frozenset({429, *range(500, 600)})
    for bad in (["teapot"], [401], [200], ["6xx"]):
        with pytest.raises(ConfigError) as error:
            with_retry_statuses(fakes, "trelica", bad)
        assert error.value.key == "connections.trelica.default.retry_statuses"


def test_a_url_the_client_cannot_parse_is_a_retryable_error_not_a_crash() -> None:
    """Everything the HTTP library raises becomes a RetryableError (consumer/delivery/http.py)."""
    client = HttpClient(DispatchConfig())
    request = HttpRequest("PATCH", "http://[not-a-host/v2/assets/1", {}, b"{}")
    with pytest.raises(RetryableError, match="connection error"):
        asyncio.run(client.send(request))
