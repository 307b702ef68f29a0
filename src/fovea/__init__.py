"""fovea: deep learning for computer vision, from building blocks to applications."""

from fovea.models.registry import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "__version__"]
