"""``%register_model VAR`` and ``%browse_models``: the model registry's widgets."""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display


@magics_class
class ModelMagics(Magics):
    @magic_arguments()
    @argument("variable", help="the notebook variable holding the model")
    @argument("--sample", help="a variable holding a sample input (for the signature)")
    @line_magic
    def register_model(self, line=""):
        """Register the model in VARIABLE: a form (name, description, tags, metrics from
        the notebook's variables), an upload with progress, the version and its link.

        Example::

            %register_model model --sample X_test
        """
        from ..widgets import register_model

        args = parse_argstring(self.register_model, line)
        namespace = self.shell.user_ns
        for name in (args.variable, args.sample):
            if name and name not in namespace:
                raise NameError(f"no variable {name!r} in the notebook")
        widget = register_model(namespace[args.variable], namespace=namespace,
                                sample_name=args.sample)
        display(widget)
        return None

    @line_magic
    def browse_models(self, line=""):
        """Show the model browser: my models and my team's, versions, aliases, loading."""
        from ..widgets import browse_models

        display(browse_models(namespace=self.shell.user_ns))
