"""A Storage SCP that a hostile caller cannot flood: bounded PDUs, deadlines, per-peer slots, TLS.

pynetdicom reads a whole PDU into memory at the length its 6-byte header claims (an
A-ASSOCIATE-RQ claiming 4 GB is buffered as it arrives), reads it with a blocking socket, runs
the TLS handshake inside the accept loop (one silent client stalls every other), and counts
association slots only once an A-ASSOCIATE-RQ has been parsed, so idle TCP connections can
take every slot. This module closes those gaps with pynetdicom's own extension points (a
server class, a request handler, the association socket):

- every PDU is refused before reading when its claimed length exceeds the limit, and must
  arrive whole within a deadline;
- connections are counted from ``accept()``: at most ``max_per_peer`` per address and
  ``max_connections`` in all; a slot is released when its association thread ends;
- the TLS handshake runs in the connection's own thread, under the request deadline;
- a C-STORE data set is written to a temporary file as its P-DATA arrive (pynetdicom's
  ``STORE_RECV_CHUNKED_DATASET``), never held in memory, and the bytes are counted as they
  come: past ``max_dataset_bytes`` the rest of that data set is dropped unread and the store
  is answered "Out of Resources"; past ``max_association_bytes`` (or an endless command set)
  the association is aborted and the partial file removed.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

logger = logging.getLogger(__name__)

#: An A-ASSOCIATE-RQ proposing 128 contexts with every transfer syntax is about 110 KB.
MIN_PDU_LIMIT = 256 * 1024
_PDU_SLACK = 1024  # PDU header fields around the negotiated PDV length
#: A DIMSE command set is a few hundred bytes; one that keeps growing is an attack.
MAX_COMMAND_BYTES = 1 << 20


@dataclass(frozen=True)
class ConnectionLimits:
    """What one caller may hold: see docs/deploy.md ("Hardening the node")."""

    max_pdu_bytes: int = 1 << 20  # announced as our Maximum Length; larger PDUs are refused
    request_timeout_s: float = 10.0  # TLS handshake + A-ASSOCIATE-RQ must arrive within (ARTIM)
    pdu_timeout_s: float = 60.0  # one PDU must arrive whole within
    max_connections: int = 32
    max_per_peer: int = 24
    max_dataset_bytes: int = 1 << 30  # one C-STORE data set; larger ones are answered Out of Resources
    max_association_bytes: int = 4 << 30  # all data sets over one association; past it, aborted

    @property
    def pdu_limit(self) -> int:
        return max(self.max_pdu_bytes, MIN_PDU_LIMIT) + _PDU_SLACK


class BoundedAssociationSocket(AssociationSocket):
    """pynetdicom's association socket, with a size limit and a deadline on every PDU read."""

    limits: ConnectionLimits
    peer: str

    @classmethod
    def guard(cls, sock: AssociationSocket, limits: ConnectionLimits, peer: str) -> BoundedAssociationSocket:
        """Bound the socket pynetdicom made (a second one would queue a second connection event)."""
        sock.__class__ = cls
        bounded = sock if isinstance(sock, cls) else None
        assert bounded is not None
        bounded.limits, bounded.peer = limits, peer
        return bounded

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self.limits.pdu_limit:
            logger.warning("connection from %s closed: a PDU of %d bytes exceeds the limit of %d",
                           self.peer, nr_bytes, self.limits.pdu_limit)
            raise OSError(f"PDU of {nr_bytes} bytes exceeds the limit")
        sock = self.socket
        assert sock is not None
        deadline = time.monotonic() + self.limits.pdu_timeout_s
        data = bytearray()
        try:
            while len(data) < nr_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("connection from %s closed: a PDU did not arrive within %.0f s",
                                   self.peer, self.limits.pdu_timeout_s)
                    raise TimeoutError("PDU read deadline passed")
                sock.settimeout(remaining)
                chunk = sock.recv(min(1 << 16, nr_bytes - len(data)))
                if not chunk:
                    break
                data += chunk
        finally:
            try:
                sock.settimeout(None)
            except OSError:
                pass
        return data


class BoundedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, counting the bytes each P-DATA brings before they are stored."""

    limits: ConnectionLimits
    peer: str
    received: int  # PDV bytes over the association
    command_bytes: int  # of the message being received
    dataset_bytes: int
    refused: set[int]  # message IDs whose data set passed max_dataset_bytes
    aborted: bool

    @classmethod
    def guard(cls, dimse: DIMSEServiceProvider, limits: ConnectionLimits, peer: str) -> BoundedDIMSE:
        dimse.__class__ = cls
        assert isinstance(dimse, cls)
        dimse.limits, dimse.peer = limits, peer
        dimse.received = dimse.command_bytes = dimse.dataset_bytes = 0
        dimse.refused = set()
        dimse.aborted = False
        return dimse

    def receive_primitive(self, primitive: Any) -> None:
        if self.aborted:
            return
        if self.message is None:  # a new DIMSE message starts
            self.command_bytes = self.dataset_bytes = 0
        values = list(primitive.presentation_data_value_list)
        commands = sum(len(data) - 1 for _, data in values if data and data[0] & 1)
        datasets = sum(len(data) - 1 for _, data in values if data and not data[0] & 1)
        self.command_bytes += commands
        self.dataset_bytes += datasets
        self.received += commands + datasets
        if self.received > self.limits.max_association_bytes or self.command_bytes > MAX_COMMAND_BYTES:
            logger.warning("association from %s aborted: %d bytes received (limit %d per association), command set %d bytes",
                           self.peer, self.received, self.limits.max_association_bytes, self.command_bytes)
            self._drop_partial(remove=True)
            self.aborted = True
            self.dul.event_queue.put("Evt19")  # pynetdicom's own provider abort (A-ABORT, then close)
            return
        if self.dataset_bytes > self.limits.max_dataset_bytes:
            command = getattr(self.message, "command_set", None)
            message_id = getattr(command, "MessageID", None)
            if message_id is None:  # data set bytes before any command set
                self.received = self.limits.max_association_bytes + 1
                self.receive_primitive(primitive)
                return
            if message_id not in self.refused:
                logger.warning("C-STORE (message %s) from %s refused: its data set passed %d bytes; the rest is dropped unread",
                               message_id, self.peer, self.limits.max_dataset_bytes)
                self.refused.add(message_id)
                self._drop_partial(remove=False)
            # keep the command fragments and the end-of-data-set mark, so the request completes and is answered
            kept = [[context, data if data[0] & 1 else bytes(data[:1])] for context, data in values if data and data[0] & 3]
            if not kept:
                return
            primitive.presentation_data_value_list = kept
        super().receive_primitive(primitive)

    def _drop_partial(self, remove: bool) -> None:
        """Empty (or close and delete) the data set received so far: pynetdicom's temporary file or buffer."""
        message = self.message
        if message is None:
            return
        handle = getattr(message, "_data_set_file", None)
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            if remove:
                handle.close()
                Path(handle.name).unlink(missing_ok=True)
        buffer = getattr(message, "data_set", None)
        if buffer is not None and hasattr(buffer, "truncate"):
            buffer.seek(0)
            buffer.truncate()


def dataset_refused(assoc: Any, message_id: int) -> bool:
    """Whether this C-STORE's data set passed ``max_dataset_bytes`` (and was dropped unread)."""
    refused = getattr(assoc.dimse, "refused", None)
    if refused is None or message_id not in refused:
        return False
    refused.discard(message_id)
    return True


class GuardedRequestHandler(RequestHandler):
    """Runs one connection: TLS handshake under the deadline, bounded socket, slot held until the end."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        limits = self.server.limits
        peer = str(self.client_address[0])
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(limits.request_timeout_s)
                self.request.do_handshake()
                self.request.settimeout(None)
            except (OSError, ssl.SSLError) as err:
                logger.warning("TLS handshake with %s failed: %s", peer, err)
                return
        assoc = self._create_association()
        BoundedAssociationSocket.guard(assoc.dul.socket, limits, peer)
        BoundedDIMSE.guard(assoc.dimse, limits, peer)
        assoc.acse_timeout = limits.request_timeout_s  # the ARTIM timer: A-ASSOCIATE-RQ within this
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()  # the connection's slot is released when its association ends


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-peer and total connection limits counted from accept()."""

    daemon_threads = True

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        self.limits = limits
        self._slots: Counter[str] = Counter()
        self._slots_lock = threading.Lock()
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)

    def get_request(self) -> tuple[Any, tuple[str, int]]:
        """Accept without the handshake (pynetdicom's runs it here, blocking the accept loop)."""
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        peer = str(client_address[0])
        with self._slots_lock:
            total = sum(self._slots.values())
            if total >= self.limits.max_connections or self._slots[peer] >= self.limits.max_per_peer:
                logger.warning("connection from %s refused: %d of %d connections open (%d from this address, limit %d)",
                               peer, total, self.limits.max_connections, self._slots[peer], self.limits.max_per_peer)
                return False
            self._slots[peer] += 1
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            peer = str(client_address[0])
            with self._slots_lock:
                self._slots[peer] -= 1
                if self._slots[peer] <= 0:
                    del self._slots[peer]
            self.shutdown_request(request)

    def open_connections(self) -> int:
        with self._slots_lock:
            return sum(self._slots.values())


def start_guarded_server(ae: ApplicationEntity, address: tuple[str, int], limits: ConnectionLimits,
                         evt_handlers: list, ssl_context: ssl.SSLContext | None = None) -> GuardedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with the guarded server class.

    Received data sets go to temporary files (``STORE_RECV_CHUNKED_DATASET``, a process-wide
    pynetdicom setting: the node owns its process).
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae.maximum_pdu_size = limits.max_pdu_bytes
    ae.maximum_associations = limits.max_connections
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=GuardedAssociationServer, limits=limits)
    thread = threading.Thread(target=make_target(server.serve_forever), name="GuardedAcceptor", daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: ae.shutdown() and server.shutdown() expect it
    return server


def server_tls_context(cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context (DICOM PS3.15 B.9 "BCP 195" profile); with ``client_ca``, callers must
    present a certificate signed by it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if client_ca:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"TLS: cannot load certificate {cert} / key {key}{f' / CA {client_ca}' if client_ca else ''}: {err}") from err
    return context
