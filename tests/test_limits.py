"""The connection budget as plain code: who may open a websocket, without sockets."""

from __future__ import annotations

from wsbus.limits import ConnectionBudget, address_key


def test_unauthenticated_connections_cannot_take_every_slot() -> None:
    budget = ConnectionBudget(total=10, unauthenticated=3, per_address=2, retry_after=10)
    silent = [budget.admit(f"10.0.0.{i}", token=None) for i in range(3)]
    full = budget.refusal("10.0.0.9", token=None)
    assert full is not None and full.status == 503 and full.retry_after == 10
    assert "max_unauthenticated 3" in full.message and "Bearer" in full.message
    # a token on the upgrade still gets in, up to the total
    tokens = [budget.admit("10.0.0.9", token="t1") for _ in range(7)]
    assert budget.refusal("10.0.0.9", token="t1") is not None  # total reached
    assert budget.refusal("10.0.0.9", token="t1").status == 503  # type: ignore[union-attr]
    tokens[0].close()
    assert budget.refusal("10.0.0.9", token="t1") is None
    # a hello accepted leaves the unauthenticated budget, the connection stays counted
    silent[0].authenticated()
    assert budget.refusal("10.0.0.9", token=None) is None
    assert (budget.open, budget.waiting) == (9, 2)


def test_per_address_cap_and_no_leftover_entries() -> None:
    budget = ConnectionBudget(total=100, unauthenticated=50, per_address=2, retry_after=2.5)
    a = [budget.admit("192.0.2.1", token=None) for _ in range(2)]
    capped = budget.refusal("192.0.2.1", token=None)
    assert capped is not None and capped.status == 429 and capped.retry_after == 3
    assert "192.0.2.1" in capped.message and "per_address 2" in capped.message
    assert budget.refusal("192.0.2.2", token=None) is None  # another address
    assert budget.refusal("192.0.2.1", token="t1") is None  # a token is not capped
    a[0].authenticated()
    a[0].authenticated()  # twice: counted once
    a[0].close()
    a[1].close()
    a[1].close()
    assert (budget.open, budget.waiting, budget.by_address) == (0, 0, {})


def test_address_key_groups_an_ipv6_slash_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("") == ""


def test_loopback_is_not_capped_per_address() -> None:
    """This machine's clients, or a proxy in front of the hub: all one address."""
    assert address_key("127.0.0.1") is None and address_key("::1") is None
    assert address_key("::ffff:127.0.0.1") is None
    budget = ConnectionBudget(total=100, unauthenticated=10, per_address=2, retry_after=10)
    local = [budget.admit("127.0.0.1", token=None) for _ in range(10)]
    assert budget.by_address == {}
    assert budget.refusal("127.0.0.1", token=None).status == 503  # type: ignore[union-attr]
    for ticket in local:
        ticket.close()
    assert (budget.open, budget.waiting) == (0, 0)


def test_one_token_cannot_take_every_slot() -> None:
    """A valid header token skips the unauthenticated budget, but holds at most
    max_identity_connections: silent sockets of one agent token cannot fill the hub."""
    budget = ConnectionBudget(total=100, unauthenticated=10, per_address=5, retry_after=10,
                              per_token=3)  # fmt: skip
    mine = [budget.admit("192.0.2.1", token="t1") for _ in range(3)]
    refused = budget.refusal("192.0.2.1", token="t1")
    assert (
        refused is not None
        and refused.status == 429
        and "max_identity_connections" in (refused.message)
    )
    assert budget.refusal("192.0.2.1", token="t2") is None  # another token
    mine[0].close()
    mine[0].close()  # twice: counted once
    assert budget.refusal("192.0.2.1", token="t1") is None
    for t in mine[1:]:
        t.close()
    assert budget.by_token == {} and budget.open == 0
