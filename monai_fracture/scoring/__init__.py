"""Batch scoring of folders: walk, header scan and study grouping, streaming DataLoader,
resumable journal, sharding over ranks, results.csv and manifest.json (docs/scoring.md)."""

from monai_fracture.scoring.runner import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ModelNotFoundError,
    ScoreSummary,
    score_paths,
)
from monai_fracture.scoring.sharding import Shard, merge_shards, parse_shard
from monai_fracture.scoring.table import COLUMNS, ResultRow, read_results_csv

__all__ = [
    "COLUMNS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ModelNotFoundError",
    "ResultRow",
    "ScoreSummary",
    "Shard",
    "merge_shards",
    "parse_shard",
    "read_results_csv",
    "score_paths",
]
