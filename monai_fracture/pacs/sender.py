"""Send result objects (SR, KOS) back to the PACS: DICOM C-STORE, or DICOMweb STOW-RS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pydicom
from pynetdicom import AE
from pynetdicom.presentation import build_context

from monai_fracture.pacs.config import Destination

logger = logging.getLogger(__name__)


class SendError(Exception):
    """The destination did not accept every result object."""


class ResultSender(Protocol):
    def send(self, files: Sequence[Path]) -> None: ...

    def describe(self) -> str: ...


class CStoreSender:
    """C-STORE SCU that opens one association per study and requires success for every object."""

    def __init__(self, destination: Destination, calling_ae_title: str, timeout_s: float = 30.0) -> None:
        self.destination = destination
        self.calling_ae_title = calling_ae_title
        self.timeout_s = timeout_s

    def describe(self) -> str:
        d = self.destination
        return f"C-STORE {d.ae_title}@{d.host}:{d.port}"

    def send(self, files: Sequence[Path]) -> None:
        datasets = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        contexts = {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}
        for sop_class, syntax in sorted(contexts):
            ae.requested_contexts = [*ae.requested_contexts, build_context(sop_class, [syntax])]
        d = self.destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            raise SendError(f"{self.describe()}: association rejected or aborted")
        try:
            for path, ds in zip(files, datasets):
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise SendError(f"{self.describe()}: no response for {path.name} (connection lost or timed out)")
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise SendError(f"{self.describe()}: {path.name} refused with status 0x{code:04X}")
        finally:
            assoc.release()


class StowSender:
    """STOW-RS through dicomweb-client: one request with every object of a study."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return f"STOW-RS {self.url}"

    def send(self, files: Sequence[Path]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session_from_user_pass

        session = create_session_from_user_pass(self.username, self.password) if self.username else requests.Session()
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)
        datasets = [pydicom.dcmread(f) for f in files]
        try:
            response = client.store_instances(datasets)
        except Exception as err:  # requests.HTTPError, connection errors
            raise SendError(f"{self.describe()}: {err}") from err
        failed = list(getattr(response, "FailedSOPSequence", None) or [])
        if failed:
            raise SendError(f"{self.describe()}: {len(failed)} of {len(datasets)} objects refused")
