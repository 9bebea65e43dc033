"""Instance profiles: the catalog, the group rules, and parsing/validating user options."""

import pytest

from redspot.spawner.profiles import (
    BUILTIN_CATALOG,
    PRICE_SOURCE,
    GiB,
    ProfileError,
    ProfileNotAllowed,
    ProfileRules,
    allowed_profiles,
    build_catalog,
    choose_profile,
    parse_size,
    parse_user_options,
)


def names(profiles):
    return [p.name for p in profiles]


def test_builtin_catalog_has_the_ec2_types_an_ml_team_offers():
    p3 = BUILTIN_CATALOG["p3.2xlarge"]
    assert (p3.vcpus, p3.memory, p3.gpus, p3.gpu_model) == (8, 61 * GiB, 1, "NVIDIA V100")
    assert BUILTIN_CATALOG["p4d.24xlarge"].gpus == 8
    assert BUILTIN_CATALOG["p4d.24xlarge"].efa == 4 and BUILTIN_CATALOG["p3.2xlarge"].efa == 0
    assert BUILTIN_CATALOG["x1.16xlarge"].memory == 976 * GiB
    assert BUILTIN_CATALOG["m5.xlarge"].gpus == 0
    assert p3.summary == "8 vCPU · 61 GiB · 1 × NVIDIA V100"


@pytest.mark.parametrize("text, expected", [
    ("16GiB", 16 * GiB), ("16Gi", 16 * GiB), ("16G", 16 * 10**9), ("500M", 500 * 10**6),
    ("1.5GiB", int(1.5 * GiB)), (1024, 1024), ("2048", 2048), ("1TiB", 1024**4),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "16 XB", "", True, 0])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ProfileError):
        parse_size(text)


def test_operators_override_fields_and_add_profiles():
    catalog = build_catalog({
        "p3.2xlarge": {"description": "Team V100", "node_labels": {"pool": "gpu"}},
        "c6i.8xlarge": {"vcpus": 32, "memory": "64GiB"},
        "p5.48xlarge": {"vcpus": 192, "memory": "2048GiB", "gpus": 8, "efa": 32,
                        "node_labels": {"karpenter.sh/capacity-type": "spot"}},
    })
    from redspot.spawner.profiles import kube_resources, kubespawner_override

    p5 = catalog["p5.48xlarge"]
    assert kube_resources(p5)["limits"]["vpc.amazonaws.com/efa"] == "32"
    assert kubespawner_override(p5)["extra_resource_limits"] == {
        "nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "32"}
    assert kubespawner_override(p5)["node_selector"]["karpenter.sh/capacity-type"] == "spot"
    assert catalog["p3.2xlarge"].description == "Team V100"
    assert catalog["p3.2xlarge"].gpus == 1  # the rest kept
    assert catalog["p3.2xlarge"].node_labels == {"pool": "gpu"}
    assert catalog["c6i.8xlarge"].memory == 64 * GiB
    assert "c6i.8xlarge" not in BUILTIN_CATALOG  # the built-in catalog is not changed


@pytest.mark.parametrize("overrides, message", [
    ({"c6i.8xlarge": {"vcpus": 32}}, "needs memory"),
    ({"m5.xlarge": {"cpus": 4}}, "unknown field(s) cpus; allowed: description"),
    ({"m5.xlarge": {"gpus": "two"}}, "gpus has the wrong type"),
    ({"m5.xlarge": {"memory": "lots"}}, "memory: 'lots' is not a size"),
    ({"Big Box": {"vcpus": 1, "memory": 1}}, "profile name 'Big Box' is not allowed"),
    ({"m5.xlarge": {"vcpus": 0}}, "vcpus must be positive"),
    ({"p4d.24xlarge": {"efa": -1}}, "efa must be 0 or more"),
])
def test_bad_profile_definitions_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ProfileError, match=None) as e:
        build_catalog(overrides)
    assert message in str(e.value)


RULES = ProfileRules(
    offered=("m5.xlarge", "r5.4xlarge", "g5.xlarge", "p3.2xlarge", "p4d.24xlarge"),
    everyone=("m5.xlarge",),
    groups={"gpu": ("g5.xlarge", "p3.2xlarge"), "memory": ("r5.4xlarge",)},
    default="m5.xlarge",
)


@pytest.mark.parametrize("groups, admin, expected", [
    ([], False, ["m5.xlarge"]),
    (["gpu"], False, ["m5.xlarge", "g5.xlarge", "p3.2xlarge"]),
    (["gpu", "memory"], False, ["m5.xlarge", "r5.4xlarge", "g5.xlarge", "p3.2xlarge"]),
    (["unknown-group"], False, ["m5.xlarge"]),
    ([], True, ["m5.xlarge", "r5.4xlarge", "g5.xlarge", "p3.2xlarge", "p4d.24xlarge"]),
])
def test_allowed_profiles_follow_the_users_groups(groups, admin, expected):
    assert names(allowed_profiles(BUILTIN_CATALOG, RULES, groups, admin)) == expected


def test_profiles_not_offered_are_never_allowed():
    rules = ProfileRules(offered=("m5.xlarge",), everyone=("m5.xlarge",),
                         groups={"gpu": ("p3.2xlarge",)})
    assert names(allowed_profiles(BUILTIN_CATALOG, rules, ["gpu"], True)) == ["m5.xlarge"]


def test_rules_check_names_unknown_and_unoffered_profiles():
    with pytest.raises(ProfileError, match="groups.gpu.profiles: unknown profile 'p9.huge'"):
        ProfileRules(groups={"gpu": ("p9.huge",)}).check(BUILTIN_CATALOG)
    with pytest.raises(ProfileError, match="everyone: profile 'p3.2xlarge' is not offered"):
        ProfileRules(offered=("m5.xlarge",), everyone=("p3.2xlarge",)).check(BUILTIN_CATALOG)


def test_choose_profile_uses_the_default_when_none_is_named():
    allowed = allowed_profiles(BUILTIN_CATALOG, RULES, ["gpu"])
    assert choose_profile(allowed, {}, "p3.2xlarge").name == "p3.2xlarge"
    assert choose_profile(allowed, {}, "p4d.24xlarge").name == "m5.xlarge"  # not allowed
    assert choose_profile(allowed, {"profile": "g5.xlarge"}, "m5.xlarge").name == "g5.xlarge"


def test_choose_profile_refuses_with_the_allowed_list():
    allowed = allowed_profiles(BUILTIN_CATALOG, RULES, [])
    with pytest.raises(ProfileNotAllowed) as e:
        choose_profile(allowed, {"profile": "p3.2xlarge"})
    assert str(e.value) == (
        "instance profile 'p3.2xlarge' is not available to you; choose one of: m5.xlarge"
    )
    assert e.value.allowed == ["m5.xlarge"]
    with pytest.raises(ProfileNotAllowed, match="no instance profile is available to you"):
        choose_profile([], {})


@pytest.mark.parametrize("options, expected", [
    (None, {}), ({}, {}), ({"profile": "m5.xlarge"}, {"profile": "m5.xlarge"}),
    ({"profile": ["m5.xlarge"]}, {"profile": "m5.xlarge"}),  # form data
    ({"profile": " m5.xlarge "}, {"profile": "m5.xlarge"}),
])
def test_parse_user_options(options, expected):
    assert parse_user_options(options) == expected


@pytest.mark.parametrize("options, message", [
    (["m5.xlarge"], "user_options must be a JSON object"),
    ("m5.xlarge", "user_options must be a JSON object"),
    ({"profile": 5}, ("user option 'profile' must be a name "
                      "(the name of an instance profile), got 5")),
    ({"profile": ""}, "must be a name"),
    ({"profile": ["a", "b"]}, "must be a name"),
    ({"image": "evil"}, "unknown user option(s): image; allowed: profile"),
])
def test_parse_user_options_refuses_malformed_input(options, message):
    with pytest.raises(ProfileError) as e:
        parse_user_options(options)
    assert message in str(e.value)


def test_server_env_advertises_the_profile():
    env = BUILTIN_CATALOG["g5.xlarge"].server_env()
    assert env == {
        "REDSPOT_PROFILE": "g5.xlarge", "REDSPOT_CPUS": "4", "REDSPOT_MEMORY": str(16 * GiB),
        "REDSPOT_GPUS": "1", "REDSPOT_GPU_MODEL": "NVIDIA A10G",
        "REDSPOT_PRICE": "1.006", "REDSPOT_PRICE_SOURCE": PRICE_SOURCE,
    }
