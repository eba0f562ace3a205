"""Where the network looked: class activation maps through MONAI, restricted to the image, and its hot region.

Why the first release drew frame-shaped maps: ``monai.visualize.GradCAM`` post-processes with
``default_normalizer``, which maps (min, max) to (1, 0), i.e. it *inverts* the map ("smallest
will become biggest", in MONAI's docstring). The strongest evidence became the coldest colour
and the zero-evidence padding and border the hottest. Here MONAI computes the raw map (its
ReLU of the gradient-weighted activations, upsampled to the network input), nothing is
inverted, the zero padding of the letterbox resize is cut away before the map is scaled (so
padding can neither win the peak nor stretch the colour range), and the map is mapped back
through the recorded resize onto the source pixels.

Why LayerCAM on two layers by default: the last convolution of an EfficientNet sees a 320-px
input as a 10 x 10 grid, coarser than a fracture; Grad-CAM on a finer stage averages the
gradients per channel and loses class specificity there. LayerCAM weights every position by its
own positive gradient, so a fine stage gives a sharp, class-specific map. The family declares
its layers (EfficientNet: the mean of LayerCAM on ``_blocks.2``, stride 8, and ``_blocks.5``,
stride 32), chosen by a rule stated in advance on the FracAtlas validation true positives among
recipes that keep the phantom pointing test; figures per recipe in docs/validation.md.

Why two implementations of LayerCAM and Grad-CAM: ``class_activation_map`` is the reference (MONAI's
``ModelWithHooks`` / ``GradCAM``, one image, a full ``backward()`` with weight gradients down to the input);
``class_activation_maps`` computes the same maps for a whole batch in one pass, differentiating
the class score only with respect to the hooked activations (``torch.autograd.grad``), with the
parameters frozen so nothing below the earliest hooked layer is recorded. Scoring uses the fast
one; tests/test_model_gradcam_fast.py holds it to the reference.

"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from monai_fracture.reports.results import EvidenceRegion

METHODS = ("gradcam", "gradcampp", "layercam")
FUSIONS = ("mean", "product")
BATCHED_METHODS = ("gradcam", "layercam")  # what class_activation_maps computes for a whole batch
RECIPE_KEYS = frozenset({"method", "layers", "fusion", "flip", "scale"})  # ModelInfo.heatmap: what sets the recipe
RECIPE_NOTES = frozenset({"recipe", "chosen_by", "localisation"})  # ModelInfo.heatmap: documentation only

# one hooked wrapper per network and layer set: MONAI's CAM classes register hooks on every
# construction and never remove them, so a fresh GradCAM per image piles up hooks
_HOOKED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
# the fast path switches the parameters' requires_grad off for its pass; one pass at a time per process,
# so a concurrent pass (PACS node threads) never restores the flags in the middle of another
_PASS = threading.Lock()


def _identity(values: torch.Tensor) -> torch.Tensor:
    return values


def default_layers(network: torch.nn.Module) -> tuple[str, ...]:
    """The layers the heatmap reads by default: what the network's family declares (``networks.registry``)."""
    from monai_fracture.networks.registry import heatmap_layers

    return heatmap_layers(network)


def _hooked(network: torch.nn.Module, layers: tuple[str, ...]):
    from monai.visualize.class_activation_maps import ModelWithHooks

    known = {name for name, _ in network.named_modules()}
    missing = [layer for layer in layers if layer not in known]
    if missing:
        raise ValueError(f"the network has no layer {', '.join(missing)} for a heatmap")
    cache = _HOOKED.setdefault(network, {})
    if layers not in cache:
        cache[layers] = ModelWithHooks(network, layers, register_forward=True, register_backward=True)
    return cache[layers]


def _layer_cam(hooked, inputs: torch.Tensor, class_index: int) -> list[torch.Tensor]:
    """LayerCAM (Jiang et al. 2021): ReLU(gradient) x activation per position, summed over channels.

    Element-wise weights (not Grad-CAM's channel means) keep shallow layers' maps sharp and
    class specific; not in MONAI, so built on its ``ModelWithHooks``.
    """
    _, activations, gradients = hooked(inputs, class_idx=class_index)
    return [torch.relu((torch.relu(g) * a).sum(1, keepdim=True)) for a, g in zip(activations, gradients)]


def _layer_maps(network, inputs: torch.Tensor, layers: tuple[str, ...], class_index: int, method: str):
    from monai.visualize import GradCAM, GradCAMpp

    hooked = _hooked(network, layers)
    if method == "layercam":
        maps = _layer_cam(hooked, inputs, class_index)
    else:
        kind = GradCAM if method == "gradcam" else GradCAMpp
        cam = kind(nn_module=hooked, target_layers=layers, postprocessing=_identity)
        maps = [cam.compute_map(inputs, class_idx=class_index, layer_idx=i) for i in range(len(layers))]
    spatial = tuple(inputs.shape[2:])
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return [torch.nn.functional.interpolate(m.float(), size=spatial, mode=mode, align_corners=False) for m in maps]


def _unit(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def class_activation_map(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    layers: str | Sequence[str],
    class_index: int = 1,
    method: str = "layercam",
    fusion: str = "mean",
    flip: bool = False,
) -> torch.Tensor:
    """Non-negative map of ``inputs`` (1, C, *spatial) at input size, from one or several layers.

    Each layer's map is upsampled to the input and scaled to [0, 1]; several layers are fused by
    their ``mean`` or ``product`` (the product keeps only what every layer agrees on). ``flip``
    averages with the map of the left-right mirrored input, mirrored back.
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose from {', '.join(METHODS)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    views = [(inputs.float(), None)] + ([(torch.flip(inputs.float(), (-1,)), -1)] if flip else [])
    total = None
    with _PASS, torch.enable_grad():
        for view, axis in views:
            maps = _layer_maps(network, view, layers, class_index, method)
            if len(maps) == 1:
                fused = maps[0]
            else:
                scaled = [_unit(m) for m in maps]
                fused = torch.stack(scaled).mean(0) if fusion == "mean" else torch.stack(scaled).prod(0)
            fused = fused if axis is None else torch.flip(fused, (axis,))
            total = fused if total is None else total + fused
    return (total / len(views))[0].detach()  # (1, *spatial)


@contextmanager
def _frozen(network: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients for one pass: no weight gradients, no graph below the first hooked layer."""
    flags = [(p, p.requires_grad) for p in network.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _layer_cam_batch(network: torch.nn.Module, inputs: torch.Tensor, layers: tuple[str, ...],
                     class_index: int, method: str = "layercam") -> list[torch.Tensor]:
    """LayerCAM (or Grad-CAM) of every image of ``inputs`` (N, C, *spatial), one map per layer (N, 1, *layer spatial).

    The earliest hooked layer's output becomes the leaf of the graph, so the backward stops there;
    the score is the sum over the batch of the class logit (images do not interact in eval mode),
    as MONAI's ``ModelWithHooks`` scores one image.
    """
    modules = dict(network.named_modules())
    missing = [layer for layer in layers if layer not in modules]
    if missing:
        raise ValueError(f"the network has no layer {', '.join(missing)} for a heatmap")
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def _hook(_module, _args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name} returns {type(output).__name__}, not a tensor: no heatmap from it")
            if not captured:  # the first hooked layer the forward reaches: the graph starts here
                output = output.detach().requires_grad_(True)
            captured[name] = output
            return output

        return _hook

    handles = [modules[layer].register_forward_hook(hook(layer)) for layer in layers]
    training = network.training
    try:
        network.eval()
        with _PASS, _frozen(network), torch.enable_grad(), warnings.catch_warnings():
            # hooks MONAI's reference left on the network fire here too, harmlessly; not worth a warning
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            logits = network(inputs)
            activations = [captured[layer] for layer in layers]
            gradients = torch.autograd.grad(logits[:, class_index].sum(), activations)
    finally:
        for handle in handles:
            handle.remove()
        network.train(training)
    if method == "gradcam":  # MONAI GradCAM: one weight per channel, the spatial mean of its gradient
        return [torch.relu((g.flatten(2).mean(2).view(*g.shape[:2], *[1] * (g.ndim - 2)) * a.detach())
                           .sum(1, keepdim=True)) for a, g in zip(activations, gradients)]
    return [torch.relu((torch.relu(g) * a.detach()).sum(1, keepdim=True)) for a, g in zip(activations, gradients)]


def _unit_each(values: torch.Tensor) -> torch.Tensor:
    """``_unit`` per image of a batch (N, ...): min-max to [0, 1], zeros where flat."""
    flat = values.flatten(1)
    low = flat.min(1).values.view(-1, *[1] * (values.ndim - 1))
    high = flat.max(1).values.view(-1, *[1] * (values.ndim - 1))
    span = high - low
    return torch.where(span > 0, (values - low) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(values))


def class_activation_maps(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    layers: str | Sequence[str],
    class_index: int = 1,
    fusion: str = "mean",
    flip: bool = False,
    method: str = "layercam",
) -> torch.Tensor:
    """LayerCAM (or Grad-CAM) maps (N, 1, *spatial) of a batch ``inputs`` (N, C, *spatial) in one forward and backward.

    The same maps as ``class_activation_map(..., method=method)`` image by image (per-image
    scaling and fusion, the flip view batched with the original), without weight gradients.
    """
    if method not in BATCHED_METHODS:
        raise ValueError(f"no batched {method!r}; batched methods: {', '.join(BATCHED_METHODS)}")
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    inputs = inputs.float()
    count = inputs.shape[0]
    views = torch.cat([inputs, torch.flip(inputs, (-1,))]) if flip else inputs
    spatial = tuple(inputs.shape[2:])
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    maps = [torch.nn.functional.interpolate(m, size=spatial, mode=mode, align_corners=False)
            for m in _layer_cam_batch(network, views, layers, class_index, method)]
    if len(maps) == 1:
        fused = maps[0]
    else:
        scaled = torch.stack([_unit_each(m) for m in maps])
        fused = scaled.mean(0) if fusion == "mean" else scaled.prod(0)
    if flip:
        fused = (fused[:count] + torch.flip(fused[count:], (-1,))) / 2
    return fused.detach()


def grad_cam(
    network: torch.nn.Module, inputs: torch.Tensor, layer: str, class_index: int = 1, method: str = "gradcam"
) -> torch.Tensor:
    """Raw (non-negative, unscaled) single-layer map of ``inputs`` (1, C, *spatial) at input size.

    ``method`` ``gradcam``/``gradcampp`` (MONAI ``GradCAM``/``GradCAMpp``) or ``layercam``. The
    network is left in eval mode (MONAI restores the mode it found).
    """
    return class_activation_map(network, inputs, (layer,), class_index, method)


def heatmap_settings(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A model's own heatmap recipe (``ModelInfo.heatmap``) -> the ``Classifier`` heatmap attributes it sets.

    Why per model: the layer and method that point at the fracture depend on how the network was
    trained (a box-guided network's last convolution localises; an image-label one's does not), so
    the recipe chosen on a model's validation fold travels with its weights. Keys: ``method``
    (``METHODS``), ``layers`` (names; ``last`` = the last convolution; absent = the family's),
    ``fusion`` (``FUSIONS``), ``flip``, ``scale`` (>= 1); any other key (how it was chosen, its
    figures: ``RECIPE_NOTES``) is documentation; anything else is refused, so a misspelt key cannot
    silently fall back to the defaults. Raises ``ValueError`` naming the bad entry.
    """
    unknown = sorted(set(recipe) - RECIPE_KEYS - RECIPE_NOTES)
    if unknown:
        raise ValueError(f"heatmap entry has unknown key(s) {', '.join(unknown)}; recipe keys: "
                         f"{', '.join(sorted(RECIPE_KEYS))}; notes: {', '.join(sorted(RECIPE_NOTES))}")
    settings: dict[str, Any] = {}
    if "method" in recipe:
        if recipe["method"] not in METHODS:
            raise ValueError(f"heatmap method {recipe['method']!r}; choose from {', '.join(METHODS)}")
        settings["heatmap_method"] = recipe["method"]
    if recipe.get("layers") is not None:
        layers = recipe["layers"]
        if isinstance(layers, str) or not layers or not all(isinstance(n, str) and n for n in layers):
            raise ValueError(f"heatmap layers must be a non-empty list of layer names, not {layers!r}")
        settings["heatmap_layer"] = tuple(layers)
    if "fusion" in recipe:
        if recipe["fusion"] not in FUSIONS:
            raise ValueError(f"heatmap fusion {recipe['fusion']!r}; choose from {', '.join(FUSIONS)}")
        settings["heatmap_fusion"] = recipe["fusion"]
    if "flip" in recipe:
        if not isinstance(recipe["flip"], bool):
            raise ValueError(f"heatmap flip must be true or false, not {recipe['flip']!r}")
        settings["heatmap_flip"] = recipe["flip"]
    if "scale" in recipe:
        scale = recipe["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 1:
            raise ValueError(f"heatmap scale must be a number >= 1, not {scale!r}")
        settings["heatmap_scale"] = float(scale)
    return settings


def check_heatmap_layers(network: torch.nn.Module, recipe: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when the recipe names a layer ``network`` lacks (before any image, not per batch)."""
    from monai_fracture.networks.registry import last_convolution

    names = {name for name, _ in network.named_modules()}
    missing = [n for n in recipe.get("layers") or () if n != "last" and n not in names]
    if missing:
        raise ValueError(f"heatmap layer(s) {', '.join(missing)} not in the network")
    if "last" in (recipe.get("layers") or ()):
        last_convolution(network)


def scale_to_unit(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (all zeros when flat); NaNs count as no evidence."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone chain hull of (row, col) points, counter-clockwise, no repeated end point."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.float64)

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def hot_region(cam: np.ndarray, level: float = 0.5, max_points: int = 32) -> EvidenceRegion:
    """The connected area around the peak of a [0, 1] map at or above ``level``, as a convex polygon.

    A convex hull of the pixel corners keeps the outline short (a PACS draws it as a polyline)
    and always encloses the peak; the polygon is thinned to at most ``max_points`` vertices.
    """
    from scipy import ndimage

    # four decimals: float noise (other thread counts, another engine's process) must not move the peak
    # or the outline between runs that computed the same map; ties go to the first pixel in raster order
    cam = np.round(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 4)
    if cam.ndim != 2 or cam.size == 0:
        raise ValueError(f"expected a 2D heatmap, got shape {cam.shape}")
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    top = float(cam[peak])
    mask = cam >= top * level if top > 0 else np.zeros_like(cam, dtype=bool)
    mask[peak] = True
    labels, _ = ndimage.label(mask)
    component = labels == labels[peak]
    rows, cols = np.nonzero(component)  # row-major: columns ascend within each row
    # only each row's outermost pixels can give hull corners: the same hull from far fewer points
    new_row = rows[1:] != rows[:-1]
    outermost = np.concatenate([[True], new_row]) | np.concatenate([new_row, [True]])
    rows, cols = rows[outermost], cols[outermost]
    # pixel corners (not centres), so a one-pixel region still has an area
    corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    hull = _convex_hull(corners)
    if len(hull) > max_points:
        hull = hull[np.linspace(0, len(hull) - 1, max_points).round().astype(int)]
    limit_r, limit_c = cam.shape[0] - 0.5, cam.shape[1] - 0.5
    hull = np.stack([np.clip(hull[:, 0], -0.5, limit_r), np.clip(hull[:, 1], -0.5, limit_c)], axis=1)
    outline = tuple((round(float(r), 1), round(float(c), 1)) for r, c in hull)
    outline = outline + outline[:1]
    return EvidenceRegion((float(peak[0]), float(peak[1])), outline, float(level),
                          round(float(component.mean()), 6))


def point_in_box(point: tuple[float, float], box: tuple[float, float, float, float], tolerance: float = 0.0) -> bool:
    """Whether (row, col) lies in ``box`` (row0, col0, row1, col1) grown by ``tolerance`` pixels."""
    r, c = point
    r0, c0, r1, c1 = box
    return r0 - tolerance <= r <= r1 + tolerance and c0 - tolerance <= c <= c1 + tolerance


def energy_in_boxes(cam: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]) -> float:
    """Share of the map's total (non-negative) value that falls inside the union of ``boxes``."""
    cam = np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float64)), 0.0)
    total = cam.sum()
    if total <= 0:
        return 0.0
    inside = np.zeros(cam.shape, dtype=bool)
    for r0, c0, r1, c1 in boxes:
        inside[max(0, math.floor(r0)) : max(0, math.ceil(r1) + 1), max(0, math.floor(c0)) : max(0, math.ceil(c1) + 1)] = True
    return float(cam[inside].sum() / total)


__all__ = [
    "BATCHED_METHODS",
    "FUSIONS",
    "METHODS",
    "RECIPE_KEYS",
    "RECIPE_NOTES",
    "EvidenceRegion",
    "class_activation_map",
    "class_activation_maps",
    "check_heatmap_layers",
    "default_layers",
    "energy_in_boxes",
    "grad_cam",
    "heatmap_settings",
    "hot_region",
    "point_in_box",
    "scale_to_unit",
]
