"""DICOM node beside a PACS: receive studies by C-STORE, score them, send SR + KOS back."""

from monai_fracture.pacs.config import Destination, NodeConfig, build_config, read_config_file
from monai_fracture.pacs.node import DicomNode, ScorePathsScorer, ScoringError
from monai_fracture.pacs.queue import JobStatus, QueueFull, StudyJob, StudyQueue
from monai_fracture.pacs.sender import CStoreSender, SendError, StowSender

__all__ = [
    "CStoreSender",
    "Destination",
    "DicomNode",
    "JobStatus",
    "NodeConfig",
    "QueueFull",
    "ScorePathsScorer",
    "ScoringError",
    "SendError",
    "StowSender",
    "StudyJob",
    "StudyQueue",
    "build_config",
    "read_config_file",
]
