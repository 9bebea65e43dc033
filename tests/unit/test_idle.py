"""The server's idle state as JupyterLab's warning reads it, and what counts as use."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from redspot.serverextension.idle import WARN_BEFORE, idle_state, reads_are_not_use

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_warning_comes_in_the_last_minutes_before_the_limit():
    state = idle_state(3600, NOW - timedelta(seconds=3000), NOW, kernels=1, busy_kernels=0)
    assert state == {"timeout": 3600, "idle": 3000.0, "stops_in": 600.0, "warn": False,
                     "warn_before": WARN_BEFORE, "kernels": 1}
    state = idle_state(3600, NOW - timedelta(seconds=3400), NOW, kernels=1, busy_kernels=0)
    assert state["warn"] and state["stops_in"] == 200
    # a short limit: warned in its last half
    assert idle_state(60, NOW - timedelta(seconds=31), NOW, 0, 0)["warn"]
    assert not idle_state(60, NOW - timedelta(seconds=29), NOW, 0, 0)["warn"]
    # past the limit: any moment now
    assert idle_state(60, NOW - timedelta(seconds=90), NOW, 0, 0)["stops_in"] == 0


def test_no_warning_without_a_limit_or_while_a_kernel_runs():
    assert idle_state(0, NOW - timedelta(days=3), NOW, 0, 0)["stops_in"] is None
    busy = idle_state(60, NOW - timedelta(seconds=59), NOW, kernels=1, busy_kernels=1)
    assert busy["stops_in"] is None and not busy["warn"]


def test_reads_and_layout_saves_are_not_use_but_changes_are():
    from jupyter_server.base.handlers import APIHandler

    reads_are_not_use()
    reads_are_not_use()  # once
    calls = []

    def handler(method, path):
        h = SimpleNamespace(request=SimpleNamespace(method=method, path=path),
                            _track_activity=True, _jupyter_current_user="ivy",
                            get_argument=lambda *a: None,
                            settings={})
        APIHandler.update_api_activity(h)
        calls.append((method, path, "api_last_activity" in h.settings))

    handler("GET", "/user/ivy/api/sessions")
    handler("PUT", "/user/ivy/lab/api/workspaces/default")
    handler("PUT", "/user/ivy/api/contents/a.ipynb")
    handler("POST", "/user/ivy/redspot/api/idle")
    assert [used for *_, used in calls] == [False, False, True, True]
