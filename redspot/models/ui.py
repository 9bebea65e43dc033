"""What Redspot adds to MLflow's UI page (pure): a way back to the hub, and first-visit
settings that suit a team registering trained models.

MLflow's UI keeps its preferences in the browser's ``localStorage``. On a first visit it
opens its AI assistant's panel (the assistant is not served here: it would call out to
model providers with stored keys), shows a promotional pop-up over the model registry,
a notice about UI telemetry (off here: ``ui-telemetry`` answers that nothing is
collected), and starts in its GenAI view. The page Redspot serves sets those
preferences before MLflow's scripts run, only where the browser has none yet (a user's
own choices stay), and adds a small "Redspot" link back to the hub's home page.
"""

from __future__ import annotations

import html
import json

#: MLflow UI preferences set on a first visit (``localStorage`` keys and values).
FIRST_VISIT = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
    "_mlflow_model_registry_promo_modal_dismissed_v1": "true",
    "mlflow.telemetry.info.alert.dismissed_v1": "true",
    "mlflow.workflowType_v1": '"machine_learning"',
}

#: Answers the guard gives for the UI's questions about features that are not served,
#: instead of a 404 the browser reports as an error: the assistant is off, with no
#: provider, and MLflow's own user accounts are not used (the hub says who is asking).
FIXED = {
    "/api/3.0/mlflow/assistant/config": {"providers": {}, "projects": {},
                                         "remote_access_allowed": False},
    "/api/3.0/mlflow/assistant/providers": {"providers": [], "resolved": None,
                                            "gateway_vendor_options": {}},
    "/api/2.0/mlflow/users/current": {},
}

_LINK_STYLE = (
    "position:fixed;top:10px;right:16px;z-index:2147483000;padding:4px 10px;"
    "border-radius:4px;background:#f5f5f5;border:1px solid #ccc;color:#1976d2;"
    "font:13px/1.4 system-ui,sans-serif;text-decoration:none")


def page_additions(hub_home: str) -> tuple[str, str]:
    """The ``<script>`` and the link put at the start of MLflow's ``<head>`` and
    ``<body>``."""
    script = (
        "<script>(function(){try{var d=" + json.dumps(FIRST_VISIT) + ";"
        "for(var k in d){if(localStorage.getItem(k)===null){localStorage.setItem(k,d[k]);}}"
        "}catch(e){}})();</script>")
    link = (f'<a id="redspot-home" href="{html.escape(hub_home, quote=True)}" '
            f'style="{_LINK_STYLE}" title="Back to Redspot">&#x2190; Redspot</a>')
    return script, link


def with_additions(index: bytes, hub_home: str) -> bytes:
    """MLflow's index page with ``page_additions``; unchanged if it is not the page
    expected (a different MLflow build)."""
    text = index.decode("utf-8", errors="replace")
    script, link = page_additions(hub_home)
    if "<head>" not in text or "<body>" not in text:
        return index
    text = text.replace("<head>", "<head>" + script, 1).replace("<body>", "<body>" + link, 1)
    return text.encode("utf-8")
