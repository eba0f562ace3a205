"""A trained model and the ways to run it: the model folder (``package``), runtime backends and
their cache, export to ONNX/TorchScript, Grad-CAM, and the ``Classifier`` that scoring uses.

Imports only from ``networks/``, ``transforms/``, ``io/`` and ``reports.results`` (never from
``scoring/`` or ``training/``).
"""

from monai_fracture.model.classifier import Classifier, default_model_path
from monai_fracture.model.package import LoadedModel, ModelInfo, ModelPackageError, load_model, save_model

__all__ = ["Classifier", "LoadedModel", "ModelInfo", "ModelPackageError", "default_model_path", "load_model",
           "save_model"]
