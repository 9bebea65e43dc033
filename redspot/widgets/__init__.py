"""Notebook widgets: registering models and browsing the registry (ipywidgets).

``register_model(model)`` shows the registration form, ``browse_models()`` the model
browser; ``%register_model VAR`` and ``%browse_models`` do the same from a cell.
"""

from .browser import ModelBrowser, browse_models
from .register import RegisterModel, register_model

__all__ = ["ModelBrowser", "RegisterModel", "browse_models", "register_model"]
