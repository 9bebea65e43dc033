"""Prices, caps, the usage log and its reports, and the cost of a Ray run (pure pieces)."""

import pytest

from redspot.cost import Node, Use, cost_sentence, run_cost
from redspot.spawner.caps import CapReached, Seat, check_cap_config, check_caps
from redspot.spawner.form import render_profiles_form
from redspot.spawner.profiles import (
    BUILTIN_CATALOG,
    PRICE_SOURCE,
    ProfileError,
    build_catalog,
    format_money,
)
from redspot.usage import (
    Record,
    UsageLog,
    format_report,
    parse_when,
    period,
    report_dict,
    summarise,
)

P3 = BUILTIN_CATALOG["p3.2xlarge"]
G5 = BUILTIN_CATALOG["g5.12xlarge"]
M5 = BUILTIN_CATALOG["m5.xlarge"]
HOUR = 3600.0


# --- prices -----------------------------------------------------------------------------

def test_every_built_in_profile_has_a_dated_list_price():
    for profile in BUILTIN_CATALOG.values():
        assert profile.price and profile.price > 0, profile.name
        assert profile.price_source == PRICE_SOURCE
    assert "us-east-1" in PRICE_SOURCE and "2024" in PRICE_SOURCE


def test_an_operator_price_replaces_the_list_price_and_its_source():
    catalog = build_catalog({"p3.2xlarge": {"price": 2.1},
                             "g5.xlarge": {"price": 0.7, "price_source": "EDP 2026"},
                             "c7i.large": {"vcpus": 2, "memory": "4GiB"}})
    assert (catalog["p3.2xlarge"].price, catalog["p3.2xlarge"].price_source) == (2.1, "")
    assert catalog["g5.xlarge"].price_source == "EDP 2026"
    assert catalog["c7i.large"].price is None
    with pytest.raises(ProfileError, match="price must be 0 or more"):
        build_catalog({"m5.xlarge": {"price": -1}})


def test_the_spawn_form_shows_each_price_and_where_it_comes_from():
    catalog = build_catalog({"c7i.large": {"vcpus": 2, "memory": "4GiB"}})
    form = render_profiles_form([P3, catalog["c7i.large"]], "p3.2xlarge")
    assert "$3.06 an hour" in form and PRICE_SOURCE in form
    card = form[form.index('data-profile="c7i.large"'):]
    assert "an hour" not in card  # no price, no line


@pytest.mark.parametrize(("amount", "text"), [
    (0, "$0.00"), (0.5, "$0.50"), (3.06, "$3.06"), (12345.678, "$12,345.68"),
    (0.0123, "$0.0123"), (0.0000431, "$0.0000431"),
])
def test_money_keeps_small_amounts_readable(amount, text):
    assert format_money(amount) == text


# --- caps -------------------------------------------------------------------------------

CAPS = {"gpu-team": {"servers": {"p3.2xlarge": 2}, "gpus": 5}}


def test_a_spawn_within_the_caps_passes():
    check_caps(CAPS, ["gpu-team"], P3, [Seat("alice", ("gpu-team",), P3)])
    check_caps(CAPS, ["other"], P3, [Seat("a", ("gpu-team",), P3)] * 5)  # not capped


def test_a_spawn_past_a_server_cap_names_the_cap_and_the_holders():
    seats = [Seat("bob", ("gpu-team",), P3), Seat("alice", ("gpu-team", "x"), P3),
             Seat("carol", ("other",), P3)]
    with pytest.raises(CapReached) as e:
        check_caps(CAPS, ["gpu-team"], P3, seats)
    assert str(e.value) == (
        "your group 'gpu-team' may run at most 2 servers of profile p3.2xlarge at once, "
        "and all are taken: alice, bob. Try again when one stops, or choose another "
        "profile.")
    assert (e.value.group, e.value.kind) == ("gpu-team", "servers")


def test_a_spawn_past_the_gpu_cap_counts_gpus_over_profiles():
    seats = [Seat("alice", ("gpu-team",), G5)]  # 4 GPUs of 5
    check_caps(CAPS, ["gpu-team"], P3, seats)  # 4 + 1
    with pytest.raises(CapReached) as e:
        check_caps(CAPS, ["gpu-team"], G5, seats)
    assert "at most 5 GPUs at once and g5.12xlarge has 4; 4 are in use: alice " \
           "(g5.12xlarge, 4 GPUs)" in str(e.value)
    check_caps(CAPS, ["gpu-team"], M5, seats * 3)  # no GPU, no GPU cap


def test_a_zero_cap_allows_none():
    with pytest.raises(CapReached, match="none is allowed"):
        check_caps({"g": {"servers": {"m5.xlarge": 0}}}, ["g"], M5, [])


@pytest.mark.parametrize(("caps", "message"), [
    ({"g": {"server": {}}}, "groups.g.caps: unknown key(s) server; allowed: servers, gpus"),
    ({"g": {"servers": {"nope": 1}}}, "groups.g.caps.servers: unknown profile 'nope'"),
    ({"g": {"gpus": -1}}, "groups.g.caps.gpus must be a whole number, 0 or more"),
    ({"g": {"servers": {"m5.xlarge": True}}}, "must be a whole number"),
])
def test_bad_caps_are_refused_naming_them(caps, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cap_config(caps, BUILTIN_CATALOG)


# --- the usage log and its reports -----------------------------------------------------

def test_the_usage_log_keeps_starts_stops_and_ray_nodes(tmp_path):
    log = UsageLog(f"sqlite:///{tmp_path}/usage.sqlite")
    log.start("server", "alice", ["gpu-team"], "p3.2xlarge", 3.06, at=1000)
    assert log.is_open("server", "alice")
    log.start("server", "alice", ["gpu-team"], "p3.2xlarge", 3.06, at=2000)  # missed stop
    assert log.stop("server", "alice", at=2500) == 1
    assert log.stop("server", "alice", at=2600) == 0
    assert log.reconcile("ray", "alice", ["gpu-team"], {"head": ("m5.xlarge", 0.192),
                                                        "w1": ("p3.2xlarge", 3.06)},
                         at=3000) == (2, 0)
    assert log.reconcile("ray", "alice", [], {"head": ("m5.xlarge", 0.192)}, at=3100) == (0, 1)
    assert log.reconcile("ray", "alice", [], {}, at=3200) == (0, 1)
    rows = [(r.kind, r.server, r.started, r.stopped) for r in log.records()]
    assert rows == [("server", "", 1000, 2000), ("server", "", 2000, 2500),
                    ("ray", "head", 3000, 3200), ("ray", "w1", 3000, 3100)]
    assert [r.started for r in log.records(since=2400, until=3050)] == [2000, 3000, 3000]
    # the same table again: nothing lost
    assert len(UsageLog(f"sqlite:///{tmp_path}/usage.sqlite").records()) == 4


def _records():
    return [
        Record("server", "alice", "p3.2xlarge", 3.06, 0, 2 * HOUR, ("gpu-team",)),
        Record("ray", "alice", "p3.2xlarge", 3.06, HOUR, 2 * HOUR, ("gpu-team",), "w1"),
        Record("server", "bob", "m5.xlarge", 0.192, HOUR, None, ("gpu-team", "analysts")),
        Record("server", "carol", "custom", None, 0, HOUR, ()),
    ]


def test_a_report_gives_hours_and_cost_per_user_clipped_to_the_period():
    lines = summarise(_records(), since=HOUR, until=3 * HOUR, by="user")
    assert [x.to_dict() for x in lines] == [
        {"key": "alice", "server_hours": 1.0, "ray_hours": 1.0, "cost": 6.12,
         "unpriced_hours": 0.0},
        {"key": "bob", "server_hours": 2.0, "ray_hours": 0.0, "cost": 0.384,
         "unpriced_hours": 0.0},
    ]  # carol stopped when the period starts; bob still runs: up to its end


def test_a_report_by_group_counts_a_user_in_each_group_and_by_profile_once():
    by_group = {x.key: x for x in summarise(_records(), 0, 3 * HOUR, by="group")}
    assert set(by_group) == {"gpu-team", "analysts", "(no group)"}
    assert by_group["gpu-team"].server_hours == pytest.approx(4.0)
    assert by_group["analysts"].cost == pytest.approx(0.384)
    assert by_group["(no group)"].unpriced_hours == 1.0
    by_profile = {x.key: x.cost for x in summarise(_records(), 0, 3 * HOUR, by="profile")}
    assert by_profile == pytest.approx({"p3.2xlarge": 9.18, "m5.xlarge": 0.384, "custom": 0})


def test_the_report_table_says_the_period_totals_and_unpriced_hours():
    lines = summarise(_records(), 0, 3 * HOUR, by="user")
    text = format_report(lines, 0, 3 * HOUR, "user")
    assert text.splitlines()[0] == "Usage from 1970-01-01 00:00 to 1970-01-01 03:00 (UTC), by user"
    assert "alice" in text and "$9.18" in text and "total" in text and "$9.56" in text
    assert "carol" in text and "not in the cost" in text
    assert "(nothing ran in this period)" in format_report([], 0, HOUR, "user")


def test_report_periods_are_dates_spans_or_now():
    assert parse_when("1970-01-02") == 86400
    assert parse_when("1970-01-01T01:30") == 5400
    assert parse_when("7d", now=10 * 86400) == 3 * 86400
    assert parse_when("12h", now=86400) == 43200
    assert parse_when("now", now=5) == 5
    with pytest.raises(ValueError, match="a span ago"):
        parse_when("last week")
    with pytest.raises(ValueError, match="by must be one of"):
        summarise([], 0, 1, by="team")
    assert period("1970-01-01", "1d", now=2 * 86400) == (0, 86400)
    with pytest.raises(ValueError, match=r"until \(7d\) must come after since \(now\)"):
        period("now", "7d")
    lines = summarise(_records(), 0, HOUR, by="user")
    assert report_dict(lines, 0, HOUR, "user") == {
        "since": 0, "until": HOUR, "by": "user", "currency": "USD",
        "lines": [x.to_dict() for x in lines]}


# --- the cost of a run ------------------------------------------------------------------

def _node(profile):
    return Node.from_env(profile.server_env())


def test_a_node_is_read_from_the_environment_a_server_or_ray_pod_gets():
    node = _node(P3)
    assert (node.profile, node.price, node.cpus, node.gpus) == ("p3.2xlarge", 3.06, 8, 1)
    assert Node.from_dict(node.to_dict()) == node
    assert Node.from_env({}) is None
    assert Node.from_env({"REDSPOT_PROFILE": "x", "REDSPOT_PRICE": "cheap"}) is None


def test_a_run_costs_the_share_of_its_node_it_reserved():
    p3, m5 = _node(P3), _node(M5)
    assert Use(p3, cpus=1, gpus=1).share == 1.0  # the one GPU
    assert Use(m5, cpus=1).share == 0.25
    assert Use(m5, cpus=1, memory=8 * 2**30).share == 0.5  # the scarcest
    assert run_cost([Use(p3, gpus=1)], HOUR) == pytest.approx(3.06)
    assert run_cost([Use(m5, cpus=1)] * 2, 1800) == pytest.approx(0.048)
    no_price = Node("custom", None, 4, 2**30, 0)
    assert run_cost([Use(no_price, cpus=1)], HOUR) is None


def test_a_finished_run_says_what_it_cost_and_how():
    text = cost_sentence([Use(_node(P3), cpus=1, gpus=1)], 42.0)
    assert text == ("Cost: about $0.0357 for 42.0 s of 1 GPU (of 1) on p3.2xlarge at "
                    f"$3.06 an hour ({PRICE_SOURCE}).")
    text = cost_sentence([Use(_node(G5), cpus=2, gpus=1)] * 2, 600)
    assert "$0.473 for 10 min 0 s of 2 workers, each 1 GPU (of 4) on g5.12xlarge" in text
    assert cost_sentence([Use(Node("custom", None, 4, 0, 0), cpus=4)], 5).startswith(
        "Cost: not known, as a profile has no price: 5.0 s of the whole machine on custom")
