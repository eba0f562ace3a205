"""Small pieces of glue the bundle configs call, kept out of the JSON so they can be tested."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from monai.transforms import Compose

logger = logging.getLogger(__name__)
T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def rank_zero_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on rank 0 first, then on the other ranks (e.g. generate a dataset once, then read it)."""
    if not is_distributed():
        return fn(*args, **kwargs)
    if rank() == 0:
        result = fn(*args, **kwargs)
        dist.barrier()
        return result
    dist.barrier()
    return fn(*args, **kwargs)


def init_distributed() -> None:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPU."""
    if is_distributed():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    logger.info("rank %d/%d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), backend)


def distributed_device() -> torch.device:
    """This rank's device: its GPU under torchrun with CUDA, else the CPU."""
    if torch.cuda.is_available():
        index = dist.get_rank() % torch.cuda.device_count() if is_distributed() else 0
        return torch.device(f"cuda:{index}")
    return torch.device("cpu")


def class_counts(items: Iterable[Mapping[str, Any]], num_classes: int = 2, label_key: str = "label") -> list[int]:
    counts = Counter(int(item[label_key]) for item in items)
    return [counts.get(c, 0) for c in range(num_classes)]


def class_weights(
    items: Sequence[Mapping[str, Any]],
    num_classes: int = 2,
    enabled: bool = True,
    device: str | torch.device = "cpu",
    label_key: str = "label",
) -> torch.Tensor | None:
    """Inverse-frequency weights for CrossEntropyLoss (n / (classes * count_c)), or None when disabled."""
    if not enabled:
        return None
    counts = class_counts(items, num_classes, label_key)
    if min(counts) == 0:
        raise ValueError(f"cannot weight classes: a class has no training items (counts {counts})")
    total = float(sum(counts))
    weights = torch.tensor([total / (num_classes * c) for c in counts], dtype=torch.float32, device=device)
    logger.info("class counts %s -> loss weights %s", counts, [round(float(w), 3) for w in weights])
    return weights


def init_head(network: torch.nn.Module, std: float = 0.01) -> torch.nn.Module:
    """Re-initialise the classifier head (the one its network family declares) to small weights and zero bias.

    MONAI's EfficientNet initialises a Linear layer uniformly in +-1/sqrt(out_features): for a
    two-class head that is +-0.71, which on 1280 ImageNet features gives logits in the tens and a
    starting loss far above log(2). A small head starts at P = 0.5 and keeps the pretrained
    features intact during the head-only warm-up.
    """
    from monai_fracture.networks.registry import init_head as init_family_head

    return init_family_head(network, std=std)


def to_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move the network; with ``channels_last`` use NHWC (2D) or NDHWC (3D) memory format."""
    network = network.to(device)
    if channels_last:
        conv3d = any(isinstance(m, torch.nn.Conv3d) for m in network.modules())
        network = network.to(memory_format=torch.channels_last_3d if conv3d else torch.channels_last)
    return network


def memory_format_for(tensor: torch.Tensor) -> torch.memory_format | None:
    """``channels_last`` for a 4-D (N, C, H, W) batch, ``channels_last_3d`` for 5-D, else None."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.ndim)


class ChannelsLastBatch:
    """A trainer/evaluator ``prepare_batch``: MONAI's default, then the image in channels_last layout.

    Pairs with :func:`to_device` ``channels_last=True`` so convolutions get NHWC (NDHWC) inputs
    and weights alike; labels and other keys are left as they are. Values are unchanged.
    """

    def __call__(self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False,
                 **kwargs: Any) -> Any:
        from monai.engines.utils import default_prepare_batch

        prepared = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if isinstance(prepared, tuple) and isinstance(prepared[0], torch.Tensor):
            memory_format = memory_format_for(prepared[0])
            if memory_format is not None:
                return (prepared[0].contiguous(memory_format=memory_format), *prepared[1:])
        return prepared


def prepare_batch(channels_last: bool = False) -> Callable[..., Any]:
    """The engines' ``prepare_batch``: MONAI's ``default_prepare_batch``, or :class:`ChannelsLastBatch`."""
    if channels_last:
        return ChannelsLastBatch()
    from monai.engines.utils import default_prepare_batch

    return default_prepare_batch


def flat_compose(*parts: Any) -> Compose:
    """One flat ``Compose`` from transforms and Composes, so CacheDataset caches up to the first random one."""
    transforms: list[Any] = []
    for part in parts:
        if part is None:
            continue
        if isinstance(part, Compose):
            transforms.extend(flat_compose(*part.transforms).transforms)
        elif isinstance(part, (list, tuple)):
            transforms.extend(flat_compose(*part).transforms)
        else:
            transforms.append(part)
    return Compose(transforms)


def bundle_preprocessing(*parts: Any, image_key: str = "image", path_key: str = "path") -> Compose:
    """``parts`` between a copy of the input path to ``path_key`` and a final metadata-free image.

    Reader metadata varies between files (windows, spacings, optional tags) and cannot always be
    collated into a batch; the network only needs the pixels, and the outputs only the path.
    Datalist box keys a chain did not turn into a mask are dropped: items with and without boxes
    must collate into one batch.
    """
    from monai.transforms import CopyItemsd, DeleteItemsd, EnsureTyped

    from monai_fracture.data.boxes import BOX_KEYS

    return flat_compose(
        CopyItemsd(keys=image_key, names=path_key),
        *parts,
        EnsureTyped(keys=image_key, dtype=torch.float32, track_meta=False),
        DeleteItemsd(keys=list(BOX_KEYS)),
    )


def describe_data(datalists: Mapping[str, Sequence[Mapping[str, Any]]], source: Any, num_classes: int = 2) -> dict[str, Any]:
    """What ``model_info.json`` records about the training data: the source and class counts per split."""
    return {
        "source": str(source) if source is not None else "synthetic (monai_fracture.data.synthetic.generate_demo_dataset)",
        "splits": {name: {"n": len(items), "class_counts": class_counts(items, num_classes)}
                   for name, items in datalists.items() if isinstance(items, Sequence)},
    }


def network_kwargs(model_dir: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_network`` kwargs of the model in ``model_dir`` (its model_info.json), else ``defaults``."""
    from monai_fracture.model.package import MODEL_INFO, ModelInfo

    path = Path(model_dir) / MODEL_INFO
    if path.is_file():
        return {k: v for k, v in ModelInfo.load(path).network.items() if k != "pretrained"}
    return dict(defaults)


def require_iterations(trainer: Any, evaluator: Any | None = None) -> None:
    """Refuse to start a training run that would do nothing (and exit 0 without a model).

    A training set smaller than one batch (``drop_last``) gives zero iterations; an empty
    validation set gives no metric to choose the model by. Both are errors naming the sizes.
    """
    loader = trainer.data_loader
    if len(loader) == 0:
        raise ValueError(
            f"training would run zero iterations: {len(loader.dataset)} training items with batch_size "
            f"{loader.batch_size} and drop_last={loader.drop_last}; add data or lower --batch_size"
        )
    if evaluator is not None and len(evaluator.data_loader) == 0:
        raise ValueError("the validation set is empty: add data or raise --val_fraction")
