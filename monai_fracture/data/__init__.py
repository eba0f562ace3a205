"""Datalists for monai-fracture: builders for known layouts, leakage checks, grouped splits.

The synthetic demo set lives in :mod:`monai_fracture.data.synthetic` (it builds on this package).
"""

from monai_fracture.data.datalist import (
    build_datalist,
    check_datalist,
    csv_items,
    detect_layout,
    dicom_folder_items,
    folder_items,
    fracatlas_items,
    items_from_table,
    load_datalist,
    write_datalist,
)
from monai_fracture.data.resolve import resolve_datalist
from monai_fracture.data.leakage import HashCache, LeakageError, find_leaks
from monai_fracture.data.split import assign_groups, split_items, split_summary

__all__ = [
    "HashCache",
    "LeakageError",
    "assign_groups",
    "build_datalist",
    "check_datalist",
    "csv_items",
    "detect_layout",
    "dicom_folder_items",
    "find_leaks",
    "folder_items",
    "fracatlas_items",
    "items_from_table",
    "load_datalist",
    "resolve_datalist",
    "split_items",
    "split_summary",
    "write_datalist",
]
