"""The app module ``solara run`` serves for ``engraft view`` (settings from the environment)."""

from engraft.plots.view import page_from_environment

page = page_from_environment()
