"""Pure parts of %%ray_remote: shipping inputs, the output channel, transports, display."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import numpy as np
import pytest

from redspot.compute import cells, display, transport
from redspot.compute.channel import OutputChannel, RemoteOutput
from redspot.compute.shipping import InputCache, Packed, pack, unpack_inputs


class FakeStore:
    """``ray.put`` at the edge: counts what would go to the object store."""

    def __init__(self):
        self.puts = []

    def __call__(self, value):
        self.puts.append(value)
        return f"ref-{len(self.puts)}"


# --- shipping ---------------------------------------------------------------------------


def test_small_values_go_inline_and_large_ones_by_reference_once():
    store = FakeStore()
    cache = InputCache(store, threshold=1 << 16)
    big = np.arange(100_000, dtype=np.float64)
    shipment = cache.prepare({"n": 3, "word": "hi", "big": big})
    assert shipment.inline["n"] == 3 and isinstance(shipment.inline["word"], Packed)
    assert shipment.refs == {"big": "ref-1"} and len(store.puts) == 1
    again = cache.prepare({"big": big})
    assert again.refs == {"big": "ref-1"} and again.reused == ["big"]
    assert len(store.puts) == 1


def test_a_value_changed_in_place_is_sent_again():
    store = FakeStore()
    cache = InputCache(store, threshold=1 << 16)
    big = np.zeros(100_000)
    cache.prepare({"big": big})
    big[-1] = 1.0
    assert cache.prepare({"big": big}).refs == {"big": "ref-2"}
    assert cache.prepare({"big": big.copy()}).refs == {"big": "ref-2"}  # equal: not again


def test_unpicklable_values_are_refused_by_name():
    cache = InputCache(FakeStore())
    shipment = cache.prepare({"lock": threading.Lock(), "n": 1})
    assert shipment.refused == ["lock (lock: cannot pickle '_thread.lock' object)"]
    assert shipment.inline == {"n": 1}


def test_forget_lets_go_of_names_the_notebook_no_longer_has():
    cache = InputCache(FakeStore(), threshold=10)
    cache.prepare({"a": b"x" * 100, "b": b"y" * 100})
    cache.forget(keep=lambda name: name == "a")
    assert "a" in cache and "b" not in cache


def test_packed_values_unpack_zero_copy_or_writable():
    array = np.arange(10.0)
    packed = pack(array)
    assert packed.size >= array.nbytes and len(packed.data) < 400
    readonly = pickled_through_bytes(packed).unpack()
    assert readonly.tolist() == array.tolist()
    writable = packed.unpack(writable=True)
    writable[0] = 5.0
    assert array[0] == 0.0  # a copy, not the original
    assert unpack_inputs({"x": pack([1, 2])}, {"y": pack("z")}) == {"x": [1, 2], "y": "z"}


def pickled_through_bytes(packed):
    import pickle

    return pickle.loads(pickle.dumps(packed, protocol=5))


# --- analysis -----------------------------------------------------------------------------


def test_analyze_finds_reads_writes_and_the_last_expression():
    names = cells.analyze("import numpy as np\ny = f(x)\nfor i in range(3):\n    pass\n"
                          "def g():\n    return z\n[k for k in y]\ny")
    assert {"f", "x", "z"} <= names.reads and "range" not in names.reads
    assert names.writes == ["np", "y", "i", "g"]
    assert names.last_expression is True


# --- the output channel -----------------------------------------------------------------


def test_the_channel_delivers_a_runs_events_in_order_and_waits_for_its_end():
    channel = OutputChannel()
    events = []
    try:
        address = channel.open(events.append)
        out = RemoteOutput(address)
        for i in range(50):
            assert out.emit(("stream", "stdout", f"{i}\n"))
        assert out.emit(("display", {"text/plain": "x"}, {}))
        # a training worker says where it runs (what the run cost is counted from)
        assert out.emit(("node", 1, {"profile": "m5.xlarge", "price": 0.192}))
        assert out.close() is True
        channel.finish(address, streamed=True, timeout=5)
        assert "".join(e[2] for e in events[:-2]) == "".join(f"{i}\n" for i in range(50))
        assert events[-2] == ("display", {"text/plain": "x"}, {})
        assert events[-1] == ("node", 1, {"profile": "m5.xlarge", "price": 0.192})
    finally:
        channel.close()


def test_the_channel_drops_connections_without_the_secret():
    channel = OutputChannel()
    events = []
    try:
        address = channel.open(events.append)
        with socket.create_connection(("127.0.0.1", channel.port)) as sock:
            sock.sendall(json.dumps({"secret": "0" * 32, "run": address.run}).encode()
                         + b'\n{"t": "stream", "name": "stdout", "text": "injected"}\n')
            sock.settimeout(5)
            try:
                assert sock.recv(1) == b""  # closed by the kernel
            except ConnectionResetError:  # closed with the injected line unread
                pass
        assert events == []
    finally:
        channel.close()


def test_idle_connections_get_no_thread_and_do_not_block_a_worker():
    """Connections that never show the secret are held by the channel's one accepting
    thread (at most MAX_PENDING, each for HELLO_TIMEOUT s), not given a thread each; a
    worker still gets through while they are held open."""
    import threading

    from redspot.compute import channel as channel_module

    channel = OutputChannel()
    events = []
    idle = []
    try:
        before = threading.active_count()
        for _ in range(channel_module.MAX_PENDING + 20):
            idle.append(socket.create_connection(("127.0.0.1", channel.port)))
        time.sleep(0.5)
        assert threading.active_count() == before
        # the longest waiting were let go to make room
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""
        address = channel.open(events.append)
        out = RemoteOutput(address)
        assert out.emit(("stream", "stdout", "hello\n"))
        assert out.close() is True
        channel.finish(address, streamed=True, timeout=5)
        assert events == [("stream", "stdout", "hello\n")]
    finally:
        for sock in idle:
            sock.close()
        channel.close()


def test_a_worker_that_cannot_connect_keeps_its_output():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from redspot.compute.channel import ChannelAddress

    out = RemoteOutput(ChannelAddress("127.0.0.1", port, "s", "r"))
    assert out.emit(("stream", "stdout", "x")) is False
    assert out.close() is False


def test_execute_line_buffers_prints_and_names_what_cannot_come_back():
    events = []
    result = cells.execute("import threading\nprint('a', end='')\nprint('b')\n"
                           "lock = threading.Lock()\nn = 2\nn * 3", {},
                           ["threading", "lock", "n"], True, events.append)
    assert events == [("stream", "stdout", "ab\n")]
    assert result["outputs"]["n"].unpack() == 2 and result["last"].unpack() == 6
    assert result["refused"] == ["lock (lock: cannot pickle '_thread.lock' object)"]


def test_execute_reports_the_cells_own_traceback():
    result = cells.execute("x = 1\ny = x / 0", {}, ["x", "y"], False, lambda e: None)
    error = result["error"]
    assert error["name"] == "ZeroDivisionError" and error["type"] is ZeroDivisionError
    assert "Cell line 2" in error["traceback"] and "y = x / 0" in error["traceback"]


# --- display ---------------------------------------------------------------------------


def test_display_bundles_are_json_with_images_in_base64():
    class Picture:
        def _repr_png_(self):
            return b"\x89PNG fake"

    data, _ = display.bundle(Picture())
    json.dumps(data)
    assert base64.b64decode(data["image/png"]) == b"\x89PNG fake"


# --- transports --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, kind, address, own", [
    ({}, "driver", None, True),
    ({"address": "10.0.0.5:6379"}, "driver", "10.0.0.5:6379", False),
    ({"address": "ray://head:10001"}, "client", "ray://head:10001", False),
    ({"local": True}, "in-process", None, False),
])
def test_resolve_picks_the_transport(kwargs, kind, address, own):
    target = transport.resolve(**kwargs, environ={})
    assert (target.kind, target.address, target.own_head) == (kind, address, own)
    assert target.streams_by_channel is (kind != "client")


def test_on_kubernetes_the_default_is_the_users_raycluster():
    env = {"REDSPOT_RAY_CLUSTER": "ray-alice", "REDSPOT_NAMESPACE": "team-a"}
    target = transport.resolve(environ=env)
    assert target.address == "ray-alice-head-svc.team-a.svc:6379"
    assert target.dashboard == "http://ray-alice-head-svc.team-a.svc:8265"
    assert target.description == "your Ray cluster ray-alice"
    assert target.autoscaling  # a GPU request waits for KubeRay to add a GPU worker
    assert target.users_own and not transport.resolve(cluster="ray-bob", environ=env).users_own
    other = transport.resolve(cluster="ray-shared", environ=env)
    assert other.address == "ray-shared-head-svc.team-a.svc:6379"


@pytest.mark.parametrize("kwargs, message", [
    ({"address": "not an address"}, "is not a Ray address: use HOST:PORT"),
    ({"address": "h:1", "local": True}, "give one of ADDRESS, --local and --cluster NAME"),
    ({"cluster": "Bad_Name"}, "is not a RayCluster name"),
    ({"cluster": "ray-x"}, "--cluster needs Kubernetes"),
])
def test_resolve_refuses_clearly(kwargs, message, monkeypatch, tmp_path):
    monkeypatch.setattr(transport, "NAMESPACE_FILE", tmp_path / "absent")
    with pytest.raises(transport.TransportError, match=message):
        transport.resolve(**kwargs, environ={})


def test_the_environments_client_checks_ids_before_asking():
    from redspot.environments.client import EnvironmentLookupError, EnvironmentsClient

    client = EnvironmentsClient(url="http://127.0.0.1:9/services/environments/", token="t")
    with pytest.raises(EnvironmentLookupError, match="is not an environment id"):
        client.runtime_env("../../etc")
    with pytest.raises(EnvironmentLookupError, match="cannot reach the environment service"):
        client.runtime_env("team/x")


def test_the_idle_timeout_comes_from_the_environment(monkeypatch):
    from redspot.compute.session import idle_timeout

    monkeypatch.setenv("REDSPOT_RAY_IDLE_TIMEOUT", "90")
    assert idle_timeout() == 90
    monkeypatch.setenv("REDSPOT_RAY_IDLE_TIMEOUT", "soon")
    assert idle_timeout() == 3600



def test_the_dashboard_link_goes_through_the_server_for_the_users_own_cluster(monkeypatch):
    from redspot.magics.ray import dashboard_link

    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    own = {"dashboard": "http://127.0.0.1:8265", "own": True}
    assert dashboard_link(own) == "/user/alice/redspot/ray/dashboard/"
    assert dashboard_link({**own, "own": False}) == "http://127.0.0.1:8265"
    assert dashboard_link({"dashboard": None}) is None


def test_ray_status_links_the_dashboard_through_the_server_and_hides_the_heads_address():
    from redspot.magics.ray import status_bundle

    status = {"address": "127.0.0.1:6379", "dashboard": "http://127.0.0.1:8265",
              "own": True, "nodes": 1, "resources": {"CPU": 2.0, "memory": 4 * 1024**3}}
    bundle = status_bundle(status, "/user/bob/redspot/ray/dashboard/")
    assert bundle["text/plain"] == (
        "Your Ray cluster: 1 node(s), 2 CPU, 0 GPU, 4.0 GiB memory\n"
        "Dashboard: /user/bob/redspot/ray/dashboard/")
    assert ('<a href="/user/bob/redspot/ray/dashboard/" target="_blank" rel="noopener">'
            in bundle["text/html"])
    for shown in bundle.values():  # the head's own address is unreachable from a browser
        assert "127.0.0.1" not in shown
    other = status_bundle({**status, "own": False, "address": "ray.example:6379"},
                          "http://ray.example:8265")
    assert other["text/plain"].startswith("Ray cluster ray.example:6379: 1 node(s)")
    assert status_bundle({**status, "own": False}, None)["text/html"].count("<a ") == 0
