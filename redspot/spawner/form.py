"""The spawn page's form: one card per instance profile the user may use. Pure HTML."""

from __future__ import annotations

from html import escape

from .profiles import Profile

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
</style>
"""


def render_profiles_form(profiles: list[Profile], selected: str | None,
                         images: list[str] = (), selected_image: str | None = None,
                         environments: list[tuple[str, str]] = (),
                         selected_environment: str | None = None) -> str:
    """Radio cards named ``profile``; ``selected`` is preselected (else the first one).

    With ``images``, a select named ``image`` offers them too; with ``environments``
    (id, description), a select named ``environment``, whose first choice is none.
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
            "</label>"
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
            f"{options}</select>"
        )
    return (
        _STYLE
        + '<h3>Instance profile</h3><div class="redspot-profiles" id="redspot-profiles">'
        + "".join(cards)
        + "</div>"
        + environment_select
        + image_select
    )
