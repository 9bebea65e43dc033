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


def test_locally_the_form_says_what_the_machine_has_and_which_profiles_exceed_it():
    from redspot.spawner.profiles import Machine

    profiles = list(BUILTIN_CATALOG.values())
    machine = Machine(cpus=2, memory=24 * 1024**3, gpus=0)
    html = render_profiles_form(profiles, "m5.xlarge", machine=machine)
    assert "share what it has: 2 CPU · 24 GiB · no GPU" in html
    big = Machine(cpus=1024, memory=100 * 1024**4, gpus=64)
    assert "Here: shares" not in render_profiles_form(profiles, None, machine=big)
    # every profile larger than the machine says so, on its own card
    for card in html.split('<label class="redspot-profile"')[1:]:
        profile = next(p for p in profiles if f'data-profile="{p.name}"' in card)
        assert ("Here: shares this machine" in card) == machine.falls_short_of(profile)
    assert "redspot-machine" not in render_profiles_form(profiles, None)  # Kubernetes


def test_the_form_says_where_to_make_an_environment():
    profiles = list(BUILTIN_CATALOG.values())
    html = render_profiles_form(profiles, None, environments_page="/services/environments/")
    assert 'id="redspot-no-environments"' in html
    assert 'href="/services/environments/"' in html
    html = render_profiles_form(profiles, None, environments=[("alice/nlp", "")],
                                environments_page="/services/environments/")
    assert "redspot-no-environments" not in html and "Make one on the environments page" in html
    assert "environments page" not in render_profiles_form(profiles, None)
