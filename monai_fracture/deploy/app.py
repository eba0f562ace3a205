"""The MONAI Deploy application: load DICOM, select CR/DX/CT series, classify, write SR + KOS.

    DICOMDataLoaderOperator ─► DICOMSeriesSelectorOperator ─► FractureClassifierOperator ─► FractureReportWriterOperator
        (SDK)                      (SDK, rules.py)              (monai_fracture.scoring)        (monai_fracture.reports)

Run: ``python -m monai_fracture.deploy -i DICOM_FOLDER -o OUT -m MODEL`` (or the
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH`` variables, as in a MAP).
``MONAI_FRACTURE_DEVICE`` picks the torch device (default: CUDA when available, else CPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from monai_fracture.deploy.operators import FractureClassifierOperator, FractureReportWriterOperator
from monai_fracture.deploy.rules import selection_rules

logger = logging.getLogger(__name__)

DEVICE_ENV = "MONAI_FRACTURE_DEVICE"


def inference_device() -> str:
    """``MONAI_FRACTURE_DEVICE`` if set, else CUDA when torch sees a GPU, else CPU."""
    import torch

    return os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")


class FractureClassificationApp(Application):
    """One pass over the input folder: every CR, DX and CT series of every study is scored."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        input_path = Path(app_context.input_path)
        output_path = Path(app_context.output_path)
        model_path = Path(app_context.model_path)
        logger.info("input %s, output %s, model %s", input_path, output_path, model_path)

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_path, name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=selection_rules(), all_matched=True, name="series_selector")
        classifier = FractureClassifierOperator(self, model_path=model_path, device=inference_device(), name="fracture_classifier")
        writer = FractureReportWriterOperator(self, output_folder=output_path, name="fracture_sr_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, classifier, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(classifier, writer, {("study_scores", "study_scores")})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    FractureClassificationApp().run()


if __name__ == "__main__":
    main()
