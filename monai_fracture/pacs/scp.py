"""Storage SCP: C-ECHO and C-STORE into the on-disk study queue, with calling-AE checks."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from monai_fracture.io.dicom_header import parse_dicom_header
from monai_fracture.pacs.config import NodeConfig
from monai_fracture.pacs.guard import ConnectionLimits, dataset_refused, server_tls_context
from monai_fracture.pacs.queue import QueueFull, StudyQueue

logger = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class StorageHandlers:
    """pynetdicom event handlers that put every received instance into a :class:`StudyQueue`."""

    def __init__(self, queue: StudyQueue) -> None:
        self.queue = queue

    def handlers(self) -> list[tuple]:
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
        ]

    def on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def on_accepted(self, event: evt.Event) -> None:
        req = event.assoc.requestor
        logger.debug("association accepted from %s (%s:%s)", req.ae_title, req.address, req.port)

    def on_rejected(self, event: evt.Event) -> None:
        req = event.assoc.requestor
        logger.warning("association rejected from %s (%s:%s)", req.ae_title, req.address, req.port)

    def on_store(self, event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title
        if dataset_refused(event.assoc, event.request.MessageID):
            return OUT_OF_RESOURCES  # its data set passed max_dataset_bytes (logged by the guard)
        received = _received_file(event)
        try:
            # the header only, bounded as the scorer reads it (a deflated body is measured before it is inflated)
            ds = parse_dicom_header(received)[0] if received else event.dataset
            study_uid = str(ds.StudyInstanceUID)
            sop_uid = str(ds.SOPInstanceUID)
        except Exception as err:  # missing UIDs or an undecodable dataset
            logger.error("C-STORE from %s: cannot read the dataset's UIDs: %s", calling, err)
            return CANNOT_UNDERSTAND
        encoded = received or event.encoded_dataset(include_meta=True)
        size = received.stat().st_size if received else len(encoded)
        try:
            job = self.queue.begin_instance(study_uid, size, calling)
        except QueueFull as err:
            logger.warning("C-STORE of %s (study %s) from %s refused: queue full: %s", sop_uid, study_uid, calling, err)
            return OUT_OF_RESOURCES
        try:
            self.queue.add_instance(job, sop_uid, encoded)
        except OSError as err:
            self.queue.abort_instance(job)
            logger.error("C-STORE of %s (study %s): cannot write to the queue: %s", sop_uid, study_uid, err)
            return OUT_OF_RESOURCES
        logger.debug("stored %s of study %s (job %s)", sop_uid, study_uid, job.job_id)
        return SUCCESS


def _received_file(event: evt.Event) -> Path | None:
    """The temporary file pynetdicom wrote the data set to (``STORE_RECV_CHUNKED_DATASET``), else None."""
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    return Path(path) if path else None


def build_storage_ae(config: NodeConfig) -> AE:
    """An AE that accepts every storage SOP class (all transfer syntaxes) and Verification."""
    ae = AE(ae_title=config.ae_title)
    # Every storage class with every transfer syntax pynetdicom knows, compressed ones included:
    # the instances are written to disk as received, never transcoded here.
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu_bytes
    ae.network_timeout, ae.dimse_timeout = config.network_timeout_s, config.dimse_timeout_s
    ae.acse_timeout = config.request_timeout_s
    if config.allowed_calling_aets:
        ae.require_calling_aet = list(config.allowed_calling_aets)
    else:
        logger.warning("no allowed_calling_aets configured: any calling AE title may store studies")
    return ae


def connection_limits(config: NodeConfig) -> ConnectionLimits:
    return ConnectionLimits(
        max_pdu_bytes=config.max_pdu_bytes, request_timeout_s=config.request_timeout_s, pdu_timeout_s=config.pdu_timeout_s,
        max_connections=config.max_associations, max_per_peer=config.max_associations_per_peer,
        max_dataset_bytes=config.max_dataset_bytes, max_association_bytes=config.max_association_bytes,
    )


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    return server_tls_context(config.tls_cert, config.tls_key, config.tls_client_ca) if config.tls_cert else None
