"""Loading with one reader whose errors get through.

MONAI's ``LoadImage`` tries every registered reader in turn and, when they all fail, raises a
generic ``RuntimeError`` with the tracebacks as text: our ``ImageReadError`` (and its reason
code, which results.csv reports) would be lost, and a file our reader refuses for a reason could
be read by another reader that knows nothing of our intensity convention. Passing the reader at
call time makes ``LoadImage`` use that reader only and lets its exception propagate.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImaged


class LoadFractureImaged(LoadImaged):
    """``LoadImaged`` with a single reader (``FractureImageReader`` by default), errors unmasked.

    A failure surfaces as MONAI's "applying transform" ``RuntimeError`` whose ``__cause__`` is the
    reader's own exception (``monai_fracture.io.ImageReadError`` for our reader).
    """

    def __init__(self, keys: KeysCollection, reader: ImageReader | str | None = None, dtype: DtypeLike = np.float32,
                 image_only: bool = True, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        if reader is None:
            from monai_fracture.io import FractureImageReader  # io is needed only once files are read

            reader = FractureImageReader()
        super().__init__(keys, reader=reader, dtype=dtype, image_only=image_only,
                         allow_missing_keys=allow_missing_keys, **kwargs)
        self.reader = self._loader.readers[-1]  # the instance LoadImage built or registered last

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        return super().__call__(data, reader if reader is not None else self.reader)


__all__ = ["LoadFractureImaged"]
