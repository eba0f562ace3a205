"""Batch scoring: the public stream ``score_items`` (work items in, per-image and per-study results
out) and ``score_paths`` on top of it (walk, header scan and study grouping, resumable journal,
sharding over ranks, results.csv and manifest.json; docs/scoring.md)."""

from monai_fracture.scoring.runner import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ModelNotFoundError,
    ScoreSummary,
    score_paths,
)
from monai_fracture.scoring.stream import (
    Evidence,
    ImageScore,
    ScoredBatch,
    StudyScore,
    classify_batch,
    localise_batch,
    localise_item,
    read_and_preprocess,
    score_items,
    write_study,
)
from monai_fracture.scoring.sharding import Shard, merge_shards, parse_shard
from monai_fracture.scoring.table import COLUMNS, ResultRow, read_results_csv

__all__ = [
    "COLUMNS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Evidence",
    "ImageScore",
    "ModelNotFoundError",
    "ResultRow",
    "ScoreSummary",
    "ScoredBatch",
    "StudyScore",
    "Shard",
    "classify_batch",
    "localise_batch",
    "localise_item",
    "merge_shards",
    "parse_shard",
    "read_and_preprocess",
    "read_results_csv",
    "score_items",
    "score_paths",
    "write_study",
]
