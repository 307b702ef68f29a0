"""The model zoo. Importing this package registers every family's builders."""

from fovea.models import alexnet, densenet, googlenet, inception, lenet, resnet, squeezenet, vgg, video  # noqa: F401
from fovea.models.base import AuxOutputs, Classifier
from fovea.models.registry import create_model, list_models, register_model

__all__ = ["AuxOutputs", "Classifier", "create_model", "list_models", "register_model"]
