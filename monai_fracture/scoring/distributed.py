"""How a run ends: exit codes, and the merge of shards (torchrun's process group, or the last shard)."""

from __future__ import annotations

import logging
from pathlib import Path

from monai_fracture.scoring.sharding import Shard, merge_shards, shard_results

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DISK_FULL = 3
EXIT_INTERRUPTED = 130


def exit_code(interrupted: bool, failed: bool) -> int:
    """130 when interrupted, 1 when an input or a DICOM output failed, else 0."""
    return EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)


def init_distributed(shard: Shard | None) -> bool:
    """Join the torchrun process group (gloo) so rank 0 can merge after a barrier."""
    if shard is None or not shard.from_torchrun:
        return False
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return True


def merge_if_complete(out_dir: Path, shard: Shard, distributed: bool) -> bool:
    """Merge the shards' results once all are there; True when results.csv was (or is) merged."""
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        merged = False
        if shard.index == 0:
            merge_shards(out_dir, shard.count)
            merged = True
        dist.barrier()
        dist.destroy_process_group()
        return merged or (out_dir / "results.csv").is_file()
    if len(shard_results(out_dir, shard.count)) == shard.count:
        try:
            merge_shards(out_dir, shard.count)  # the last shard to finish merges
            return True
        except (FileNotFoundError, ValueError) as err:
            logger.warning("shards not merged: %s", err)
    return False
