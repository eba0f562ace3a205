"""The synthetic demo set: phantom radiographs and CT written as real DICOM (no dataset needed).

Sits above the datalist code (it writes a ``datalist.json`` with :mod:`monai_fracture.data.datalist`);
nothing in ``monai_fracture.data`` outside :mod:`~monai_fracture.data.resolve` imports it.
"""

from monai_fracture.data.synthetic.dataset import LABEL_COLUMNS, MANIFEST, generate_demo_dataset

__all__ = ["LABEL_COLUMNS", "MANIFEST", "generate_demo_dataset"]
