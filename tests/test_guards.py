"""Host and Origin checks, shared by the websocket server and the HTTP shim."""

from __future__ import annotations

from wsbus.guards import HOST_REFUSED, Guards


def test_a_loopback_hub_without_tokens_answers_loopback_hosts_only() -> None:
    g = Guards("127.0.0.1", authenticated=False)
    for ok in (["127.0.0.1:8765"], ["localhost"], ["[::1]:8080"], ["devbox"], [None]):
        assert g.host_refused(ok) is None, ok
    for bad in (["evil.example"], ["10.0.0.5:8765"], ["127.0.0.1", "evil.example"]):
        assert g.host_refused(bad) == HOST_REFUSED, bad


def test_with_tokens_or_another_address_any_host_passes() -> None:
    assert Guards("127.0.0.1", authenticated=True).host_refused(["evil.example"]) is None
    assert Guards("0.0.0.0", authenticated=False).host_refused(["hub.lan"]) is None


def test_browser_origins_need_allowing() -> None:
    g = Guards("127.0.0.1", authenticated=False, allow_origins=["https://ok.example"])
    assert g.origin_refused(None) is None  # not a browser
    assert g.origin_refused("https://ok.example") is None
    refused = g.origin_refused("https://evil.example")
    assert refused is not None and "--allow-origin" in refused
    assert g.websocket_origins() == [None, "https://ok.example"]
    anyone = Guards("127.0.0.1", authenticated=False, allow_origins=["*"])
    assert anyone.origin_refused("https://x.example") is None
    assert anyone.websocket_origins() is None


def test_own_origin_only_where_rebinding_cannot_forge_it() -> None:
    """A page of the port's own origin: granted with tokens, or when Host is an
    address or localhost; never for a name a rebound page could have."""
    open_hub = Guards("127.0.0.1", authenticated=False)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.0.0.5:8080"):
        assert open_hub.own_origin(f"http://{host}", [host], "http"), host
    for host in ("devbox:8080", "evil", "evil.example:8080"):
        assert not open_hub.own_origin(f"http://{host}", [host], "http"), host
    assert not open_hub.own_origin("http://127.0.0.1:9", ["127.0.0.1:8080"], "http")
    assert not open_hub.own_origin("https://127.0.0.1:8080", ["127.0.0.1:8080"], "http")
    assert not open_hub.own_origin("http://a:1", ["a:1", "a:1"], "http")
    assert not open_hub.own_origin(None, ["127.0.0.1:8080"], "http")
    with_tokens = Guards("0.0.0.0", authenticated=True)
    assert with_tokens.own_origin("https://hub.example", ["hub.example"], "https")
