"""The packages field of requests and the layer listing, without a daemon:
what run(), session() and layers() put on the wire, and what comes back."""
from __future__ import annotations

import pytest

from sandboxd import _calls, limits
from sandboxd import _protocol as p
from sandboxd.errors import InvalidArgumentError, PackageInstallFailedError, from_reply
from sandboxd.types import layer_info, run_result


def test_run_and_session_carry_packages() -> None:
    req = _calls.run("import mypkg", "python", None, None, None, 1.0,
                     _calls.network(None, False, None, ["mypkg==1.0", "other[x]==2.0"]))
    m = p.decode(p.encode(req.message))
    assert m["packages"] == ["mypkg==1.0", "other[x]==2.0"]
    assert m["network"] is False  # packages never imply network
    s = _calls.session_create("javascript", None, None, None, None, 1.0,
                              _calls.network(None, False, None, ["left-pad@1.3.0"]))
    assert p.decode(p.encode(s.message))["packages"] == ["left-pad@1.3.0"]


def test_no_packages_by_default() -> None:
    m = p.decode(p.encode(_calls.run("print(1)", "python", None, None, None, 1.0).message))
    assert m["packages"] == []


def test_packages_are_a_bounded_list_of_strings() -> None:
    with pytest.raises(InvalidArgumentError):
        _calls.network(None, False, None, "mypkg==1.0")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        _calls.network(None, False, None, [f"p{i}==1" for i in range(limits.MAX_PACKAGES + 1)])


def test_layers_request_and_listing() -> None:
    req = _calls.layers("py-" + "0" * 40, False, 1.0)
    assert req.answer == "layer_list"
    m = p.decode(p.encode(req.message))
    assert m == {"type": "layers_request", "id": m["id"], "drop": "py-" + "0" * 40, "drop_all": False}
    all_ = p.decode(p.encode(_calls.layers(None, True, 1.0).message))
    assert all_["drop"] == "" and all_["drop_all"] is True
    info = layer_info({"key": "py-" + "a" * 40, "language": "python", "packages": ["mypkg==1.0"],
                       "lock": ["mypkg==1.0 sha256:00"], "bytes": 4096, "last_used_unix_ms": 1, "users": 0,
                       "building": False})
    assert info.packages == ["mypkg==1.0"] and info.lock == ["mypkg==1.0 sha256:00"]


def test_result_layer_and_install_errors() -> None:
    frame = p.encode({"type": "result", "id": 1, "layer": {"key": "py-" + "b" * 40, "cache": "hit", "build_ms": 0}})
    r = run_result(p.decode(frame))
    assert r.layer == {"key": "py-" + "b" * 40, "cache": "hit", "build_ms": 0}
    e = from_reply("package_install_failed", "ERROR: No matching distribution found for nope==1", code_may_run=True)
    assert isinstance(e, PackageInstallFailedError) and e.retry_safe and not e.retryable


def test_a_request_with_packages_waits_for_a_build() -> None:
    net = _calls.network(None, False, None, ["mypkg==1.0"])
    plain = _calls.run("print(1)", "python", 10, None, None, 5.0)
    built = _calls.run("print(1)", "python", 10, None, None, 5.0, net)
    assert plain.wait == 15.0
    assert built.wait == 15.0 + _calls.DEFAULT_BUILD_SLACK
    assert _calls.run("print(1)", "python", 10, None, None, 5.0, net, build_slack=7.0).wait == 22.0
    # The daemon bounds a build by package_build_timeout_ms, at most an hour.
    assert _calls.DEFAULT_BUILD_SLACK >= 3600
    assert _calls.session_create("python", None, None, None, None, 5.0).wait == 10.0
    assert _calls.session_create("python", None, None, None, None, 5.0, net, build_slack=7.0).wait == 17.0
    assert _calls.run("print(1)", "python", 10, None, None, 5.0, _calls.network(None, False, None, [])).wait == 15.0


def test_clients_carry_their_build_slack() -> None:
    import sandboxd

    assert sandboxd.Client("/nonexistent").build_slack == _calls.DEFAULT_BUILD_SLACK
    assert sandboxd.Client("/nonexistent", build_slack=60).build_slack == 60
    assert sandboxd.AsyncClient("/nonexistent", build_slack=60).build_slack == 60


def test_decorator_keeps_its_packages() -> None:
    from sandboxd import sandbox

    def uses_mypkg() -> int:
        import mypkg  # type: ignore[import-not-found]

        return int(mypkg.answer())

    f = sandbox(packages=("mypkg==1.0",))(uses_mypkg)
    assert f.packages == ["mypkg==1.0"]
    assert sandbox(uses_mypkg).packages == []
    with pytest.raises(TypeError, match="list of specifiers"):
        sandbox(packages="mypkg==1.0")(uses_mypkg)  # type: ignore[arg-type]
