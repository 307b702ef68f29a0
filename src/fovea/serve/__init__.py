"""`fovea serve`: a local web app and JSON API to browse runs and try their models on images."""

from fovea.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
