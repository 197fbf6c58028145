"""The network fields of requests, without a daemon: what run(),
session() and Session.set_network put on the wire."""
from __future__ import annotations

import pytest

from sandboxd import _calls
from sandboxd import _protocol as p
from sandboxd.errors import InvalidArgumentError


def test_run_carries_domains_and_ports() -> None:
    req = _calls.run("print(1)", "python", None, None, None, 1.0,
                     _calls.network(["example.org", "*.example.com"], False, [8080, (3000, 18080), (9000, "unix")]))
    m = p.decode(p.encode(req.message))
    assert m["network"] is True
    assert m["allowed_domains"] == ["example.org", "*.example.com"]
    assert m["expose_ports"] == [
        {"internal": 8080, "external": 0, "unix_socket": False},
        {"internal": 3000, "external": 18080, "unix_socket": False},
        {"internal": 9000, "external": 0, "unix_socket": True},
    ]


def test_no_network_by_default() -> None:
    m = p.decode(p.encode(_calls.run("print(1)", "python", None, None, None, 1.0).message))
    assert m["network"] is False and m["allowed_domains"] == [] and m["expose_ports"] == []


def test_session_network_change() -> None:
    req = _calls.session_network("s-0123456789abcdef01234567", ["pypi.org"], False, 1.0)
    assert req.answer == "session_list"
    m = p.decode(p.encode(req.message))
    assert m["type"] == "session_network" and m["network"] is True and m["allowed_domains"] == ["pypi.org"]
    off = p.decode(p.encode(_calls.session_network("s-0123456789abcdef01234567", None, False, 1.0).message))
    assert off["network"] is False and off["allowed_domains"] == []


def test_one_string_is_not_a_list_of_names() -> None:
    with pytest.raises(InvalidArgumentError):
        _calls.network("example.org", False, None)
