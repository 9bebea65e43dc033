"""The spawn page's form: one card per instance profile the user may use. Pure HTML."""

from __future__ import annotations

from html import escape

from .profiles import Machine, Profile

_STYLE = """
<style>
  .redspot-profiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr));
                      gap: .75rem; margin: 1rem 0; }
  .redspot-profile { display: block; border: 1px solid #ccc; border-radius: .5rem;
                     padding: .75rem 1rem; cursor: pointer; }
  .redspot-profile:has(input:checked) { border-color: #f37524; box-shadow: 0 0 0 2px #f3752455; }
  .redspot-profile input { margin-right: .5rem; }
  .redspot-profile .summary { font-family: monospace; font-size: .9em; }
  .redspot-profile .gpu { color: #2a7a2a; font-weight: bold; }
  .redspot-profile .description { color: #555; font-size: .9em; margin: .25rem 0 0 0; }
  .redspot-profile .price { font-size: .9em; margin: .25rem 0 0 0; }
  .redspot-profile .price small { color: #777; }
  .redspot-profile .here { color: #8a6d00; font-size: .85em; margin: .25rem 0 0 0; }
</style>
"""


def render_profiles_form(profiles: list[Profile], selected: str | None,
                         images: list[str] = (), selected_image: str | None = None,
                         environments: list[tuple[str, str]] = (),
                         selected_environment: str | None = None,
                         environments_page: str | None = None,
                         machine: Machine | None = None) -> str:
    """Radio cards named ``profile``; ``selected`` is preselected (else the first one).

    With ``images``, a select named ``image`` offers them too; with ``environments``
    (id, description), a select named ``environment``, whose first choice is none;
    ``environments_page`` (the environments service's page) is where to make one.
    With ``machine`` (local servers: what they really share), the form says what this
    machine has, and each profile larger than it says so.
    """
    if not profiles:
        return (
            '<p class="alert alert-warning" id="redspot-no-profiles">'
            "No instance profile is available to you. Ask an administrator to add you to "
            "a group that may use one.</p>"
        )
    names = [p.name for p in profiles]
    chosen = selected if selected in names else names[0]
    cards = []
    for profile in profiles:
        checked = " checked" if profile.name == chosen else ""
        gpu = ' gpu' if profile.gpus else ''
        cards.append(
            f'<label class="redspot-profile" data-profile="{escape(profile.name)}">'
            f'<input type="radio" name="profile" value="{escape(profile.name)}"{checked}>'
            f"<strong>{escape(profile.title)}</strong>"
            f'<div class="summary{gpu}">{escape(profile.summary)}</div>'
            f'<p class="description">{escape(profile.description)}</p>'
            + _price(profile)
            + (f'<p class="here">Here: shares this machine\'s {escape(machine.summary)}</p>'
               if machine and machine.falls_short_of(profile) else "")
            + "</label>"
        )
    image_select = ""
    if images:
        chosen_image = selected_image if selected_image in images else images[0]
        options = "".join(
            f'<option value="{escape(name)}"{" selected" if name == chosen_image else ""}>'
            f"{escape(name)}</option>"
            for name in images
        )
        image_select = (
            '<h3><label for="redspot-image">Image</label></h3>'
            f'<select class="form-control" id="redspot-image" name="image">{options}</select>'
        )
    environment_select = ""
    make_one = (f' <a href="{escape(environments_page)}" target="_blank" rel="noopener">'
                "Make one on the environments page</a>." if environments_page else "")
    if environments_page and not environments:
        environment_select = (
            '<h3>Environment</h3><p id="redspot-no-environments">Redspot\'s default. None '
            f"of yours or your team's is ready yet.{make_one}</p>")
    if environments:
        options = '<option value="">Redspot default</option>' + "".join(
            f'<option value="{escape(env_id)}"'
            f'{" selected" if env_id == selected_environment else ""}>'
            f"{escape(env_id)}{' — ' + escape(description) if description else ''}</option>"
            for env_id, description in environments
        )
        environment_select = (
            '<h3><label for="redspot-environment">Environment</label></h3>'
            '<select class="form-control" id="redspot-environment" name="environment">'
            f"{options}</select>" + (f"<p>{make_one}</p>" if make_one else "")
        )
    machine_note = ""
    if machine is not None:
        machine_note = (
            '<p class="alert alert-info" id="redspot-machine">Servers here run on one '
            f"machine and share what it has: {escape(machine.summary)}. A profile's size "
            "is what it gets on Kubernetes; here it is what your server and Ray are told, "
            "and nothing larger is enforced.</p>")
    return (
        _STYLE
        + '<h3>Instance profile</h3>' + machine_note
        + '<div class="redspot-profiles" id="redspot-profiles">'
        + "".join(cards)
        + "</div>"
        + environment_select
        + image_select
    )


def _price(profile: Profile) -> str:
    """The card's price line: what an hour costs and where the figure comes from."""
    if profile.price is None:
        return ""
    source = f" <small>({escape(profile.price_source)})</small>" if profile.price_source else ""
    return f'<p class="price">{escape(profile.price_label)}{source}</p>'
