"""The spawn form's HTML."""

from redspot.spawner.form import render_profiles_form
from redspot.spawner.profiles import BUILTIN_CATALOG, make_profile


def test_form_lists_profiles_and_preselects_one():
    profiles = [BUILTIN_CATALOG["m5.xlarge"], BUILTIN_CATALOG["p3.2xlarge"]]
    html = render_profiles_form(profiles, "p3.2xlarge")
    assert html.count('name="profile"') == 2
    assert 'value="p3.2xlarge" checked' in html
    assert 'value="m5.xlarge" checked' not in html
    assert "8 vCPU · 61 GiB · 1 × NVIDIA V100" in html
    assert 'value="m5.xlarge" checked' in render_profiles_form(profiles, "unknown")


def test_form_escapes_operator_text():
    evil = make_profile("evil.box", {"vcpus": 1, "memory": 1,
                                     "display_name": "<script>alert(1)</script>",
                                     "description": '"><img src=x>'})
    html = render_profiles_form([evil], None)
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_form_without_profiles_says_what_to_do():
    assert "Ask an administrator" in render_profiles_form([], None)
