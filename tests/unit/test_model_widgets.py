"""The notebook side of the registry, pure parts: checks, flavors, the widgets' helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from redspot.models import client as registry
from redspot.models.validation import (
    InvalidInput,
    as_number,
    check_metrics,
    check_tags,
    name_problem,
)
from redspot.widgets.browser import in_scope, versions_table
from redspot.widgets.register import (
    RegisterModel,
    numeric_variables,
    parse_pairs,
    sample_variables,
    suggest_name,
)


@pytest.mark.parametrize("name, problem", [
    ("churn-model", None), ("Churn model v2", None), ("a" * 256, None),
    ("", "needs a name"), ("  ", "needs a name"), (" x", "white space"),
    ("a/b", "'/'"), ("a:b", "':'"), ("50%", "'%'"), ("a\nb", "control"),
    ("a" * 257, "at most 256"), (None, "needs a name"),
])
def test_model_names(name, problem):
    found = name_problem(name)
    assert (found is None) if problem is None else (problem in found), found


def test_tags_and_metrics_are_checked_with_the_limits_in_the_message():
    assert check_tags({"team": "growth", "n": 3, "none": None}) == {
        "team": "growth", "n": "3", "none": ""}
    with pytest.raises(InvalidInput, match="at most 100000"):
        check_tags({"notes": "x" * 100_001})
    with pytest.raises(InvalidInput, match="at most 250"):
        check_tags({"k" * 251: "v"})
    with pytest.raises(InvalidInput, match="dict"):
        check_tags(["a=b"])
    torch = pytest.importorskip("torch")
    assert check_metrics({"loss": np.float32(0.5), "acc": torch.tensor(0.75), "n": 3}) == {
        "loss": 0.5, "acc": 0.75, "n": 3.0}
    for bad in ("high", float("nan"), math.inf, True, np.zeros(3), torch.zeros(2)):
        with pytest.raises(InvalidInput, match="finite number"):
            check_metrics({"m": bad})
    assert as_number(np.array([2.5])) == 2.5


def test_flavors_are_detected_and_the_rest_refused():
    torch = pytest.importorskip("torch")
    sklearn = pytest.importorskip("sklearn.linear_model")
    from mlflow.pyfunc import PythonModel

    class Custom(PythonModel):
        def predict(self, model_input, params=None):
            return model_input

    class Net(torch.nn.Module):
        def forward(self, x):
            return x

    assert registry.detect_flavor(torch.nn.Linear(2, 2)) == "pytorch"
    assert registry.detect_flavor(Net()) == "pytorch"
    assert registry.detect_flavor(sklearn.LinearRegression()) == "sklearn"
    assert registry.detect_flavor(Custom()) == "pyfunc"
    assert registry.detect_flavor(lambda x: x) == "pyfunc"
    for bad in (object(), 3, "model", Net):
        with pytest.raises(InvalidInput, match="cannot register"):
            registry.detect_flavor(bad)


def test_signatures_come_from_a_sample_input():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(4, 2)
    signature = registry.signature(model, "pytorch", np.zeros((3, 4), dtype="float32"))
    assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 4)
    assert signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 2)
    assert registry.signature(model, "pytorch", None) is None
    with pytest.raises(InvalidInput, match="failed on the sample input"):
        registry.signature(model, "pytorch", np.zeros((3, 5), dtype="float32"))


def test_the_form_offers_the_notebooks_numbers_and_arrays():
    namespace = {"loss": 0.25, "acc": np.float64(0.9), "flag": True, "_hidden": 1.0,
                 "name": "x", "X": np.zeros((2, 2)), "f": len, "nan": float("nan")}
    assert numeric_variables(namespace) == {"acc": 0.9, "loss": 0.25}
    assert sample_variables(namespace) == ["X"]
    assert parse_pairs("team=growth\nstage = dev, owner=a", "tags") == {
        "team": "growth", "stage": "dev", "owner": "a"}
    with pytest.raises(InvalidInput, match="'oops' is not name=value"):
        parse_pairs("oops", "tags")


def test_suggested_names_are_unique_and_say_whose():
    def churn_scorer(x):
        return x

    assert suggest_name(churn_scorer, [], "alice") == "alice-churn_scorer"
    assert suggest_name(lambda x: x, [], None) == "model"
    assert suggest_name(object(), ["alice-object", "alice-object-2"], "alice") == \
        "alice-object-3"


ACCESS = {"user": "bob", "groups": ["ml"], "models": [
    {"name": "a1", "owner": "alice", "groups": ["ml"], "private": False, "may_change": True},
    {"name": "a2", "owner": "alice", "groups": [], "private": False, "may_change": False},
    {"name": "b1", "owner": "bob", "groups": [], "private": True, "may_change": True},
]}


@pytest.mark.parametrize("scope, names", [
    ("mine", ["b1"]), ("team", ["a1"]), ("all", ["a1", "a2", "b1"])])
def test_the_browser_scopes(scope, names):
    assert [m["name"] for m in in_scope(ACCESS, scope)] == names


def test_the_versions_table_puts_metrics_side_by_side():
    infos = [
        registry.VersionInfo("1", [], 0, "pytorch", "r1", {"loss": 0.5}, {
            "redspot.user": "alice", "redspot.git_commit": "0123456789abcdef"}),
        registry.VersionInfo("2", ["champion"], 0, "pytorch", "r2",
                             {"loss": 0.25, "auc": 0.9}, {}),
    ]
    table = versions_table(infos)
    assert "<th>auc</th><th>loss</th>" in table
    # newest first, a missing metric an empty cell
    assert table.index("<td>2</td>") < table.index("<td>1</td>")
    assert "<td>champion</td>" in table and "<td>0.5</td>" in table
    assert "git_commit=0123456789ab" in table and "user=alice" in table


def test_the_sample_named_on_the_magic_is_the_one_picked():
    from sklearn.linear_model import LinearRegression

    X = np.arange(10.0).reshape(5, 2)
    lin = LinearRegression().fit(X, X[:, 0])
    form = RegisterModel(lin, namespace={"X": X, "rows": [[1.0, 2.0]]}, names=[],
                         sample_name="rows")
    # "rows" is a list, which the form would not offer by itself: named, it is picked
    assert form.sample.value == "rows"
    assert form.sample_input() == [[1.0, 2.0]]
    assert RegisterModel(lin, namespace={"X": X}, names=[]).sample.value == ""


def test_a_loaded_model_gets_a_name_no_notebook_variable_has():
    from redspot.widgets.browser import free_variable

    assert free_variable("churn-net", "3", {}) == "churn_net_v3"
    assert free_variable("churn-net", "3", {"churn_net_v3": 1}) == "churn_net_v3_2"
    assert free_variable("2024 model", "1", {}) == "model_2024_model_v1"
