"""Attacks on the DICOM node (issue 13), against a real Storage SCP on loopback with bounded loops.

The attacker connects from 127.0.0.2 (Linux routes all of 127/8 to loopback), the legitimate
caller from 127.0.0.1, so per-address limits can tell them apart as they would on a network.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification

from helpers import hostile  # tests/helpers/hostile.py: the generators shared with benchmarks/bench_hostile.py

from monai_fracture.pacs.config import build_config
from monai_fracture.pacs.guard import start_guarded_server
from monai_fracture.pacs.queue import StudyQueue
from monai_fracture.pacs.scp import StorageHandlers, build_storage_ae, connection_limits, tls_context

ATTACKER = "127.0.0.2"
CALLED = "MONAI_FRACTURE"

pytestmark = pytest.mark.network


def _start(tmp_path: Path, **settings):
    config = build_config({"work_dir": tmp_path / "work", "port": 0, **settings})
    ae = build_storage_ae(config)
    handlers = StorageHandlers(StudyQueue(config.work_dir, 10, 1 << 30)).handlers()
    server = start_guarded_server(ae, ("127.0.0.1", 0), connection_limits(config), handlers, tls_context(config))
    return server, server.server_address[1]


@pytest.fixture
def node(tmp_path):
    server, port = _start(tmp_path, request_timeout_s=1.0, pdu_timeout_s=1.0, max_associations=8,
                          max_associations_per_peer=3, max_pdu_bytes=64 * 1024)
    yield server, port
    server.shutdown()


def echo(port: int, ssl_context: ssl.SSLContext | None = None, timeout: float = 10) -> bool:
    ae = AE(ae_title="LEGIT")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED, tls_args=(ssl_context, "127.0.0.1") if ssl_context else None)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def _flood(sock: socket.socket, header: bytes, mib: int) -> int:
    """Send ``header`` then up to ``mib`` MiB; the bytes sent before the node closed the connection."""
    sent = 0
    sock.settimeout(10)
    try:
        sock.sendall(header)
        for _ in range(mib):
            sock.sendall(bytes(1 << 20))
            sent += 1 << 20
    except OSError:
        pass
    return sent


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except OSError:
        return True


def test_oversized_associate_request_is_refused_before_it_is_read(node):
    server, port = node
    sock = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
    sent = _flood(sock, struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0), 64)
    sock.close()
    assert sent < 16 << 20  # closed after the header, not after 4 GB (socket buffers take a few MB)
    assert echo(port)


def test_oversized_data_pdu_after_association_is_refused(node):
    server, port = node
    ae = AE(ae_title="LEGIT")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    sent = _flood(raw, struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0), 64)
    assert sent < 16 << 20
    deadline = time.monotonic() + 10
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    assert echo(port)


def test_idle_connections_cannot_take_the_slots_of_other_callers(node):
    server, port = node
    idle = []
    for _ in range(40):  # bounded: far more than the per-peer limit of 3
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0)))
        except OSError:
            break
    time.sleep(0.3)
    assert server.open_connections() <= 3
    assert echo(port)  # the legitimate caller is served while the attacker's sockets are open
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 10
    while server.open_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_connections() == 0  # slots freed promptly (request deadline is 1 s here)


def test_silent_and_slow_callers_are_cut_off_at_their_deadlines(node):
    server, port = node
    silent = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
    started = time.monotonic()
    assert _closed_within(silent, 10)  # no A-ASSOCIATE-RQ within the request timeout (1 s)
    assert time.monotonic() - started < 8
    slow = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
    slow.sendall(struct.pack(">BBL", 0x01, 0, 1000) + b"\x00" * 10)  # a PDU that never completes
    started = time.monotonic()
    assert _closed_within(slow, 10)
    assert time.monotonic() - started < 8
    silent.close()
    slow.close()


# ------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "node.pem", folder / "node.key"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {proc.stderr[-300:]}")
    return cert, key


def test_tls_node_serves_tls_callers_only_and_a_silent_caller_blocks_nobody(tmp_path, certificate):
    cert, key = certificate
    server, port = _start(tmp_path, tls_cert=str(cert), tls_key=str(key), request_timeout_s=5.0)
    try:
        silent = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))  # no handshake
        client = ssl.create_default_context(cafile=str(cert))
        assert echo(port, client)  # the accept loop is not stuck in the silent caller's handshake
        assert not echo(port, timeout=3)  # plain DICOM is not accepted
        silent.close()
    finally:
        server.shutdown()


def test_tls_configuration_errors_name_the_file(tmp_path, certificate):
    cert, _ = certificate
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        build_config({"work_dir": tmp_path, "tls_cert": str(cert)})
    config = build_config({"work_dir": tmp_path, "tls_cert": str(cert), "tls_key": str(tmp_path / "missing.key")})
    with pytest.raises(ValueError, match="missing.key"):
        tls_context(config)


# ------------------------------------------------------------------ secrets
def test_stow_password_comes_from_a_file_or_the_environment_never_argv(tmp_path, monkeypatch):
    secret = tmp_path / "stow.secret"
    secret.write_text("s3cret\n")
    config = build_config({"work_dir": tmp_path, "stow_url": "http://127.0.0.1:9/dicom-web", "stow_password_file": str(secret)})
    assert config.stow_password == "s3cret"
    assert "stow_password" not in config.to_dict()
    monkeypatch.setenv("MONAI_FRACTURE_STOW_PASSWORD", "from-env")
    assert build_config({"work_dir": tmp_path}).stow_password == "from-env"
    proc = subprocess.run(
        [sys.executable, "-m", "monai_fracture", "serve", "--work-dir", str(tmp_path), "--stow-password", "visible"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--stow-password-file" in proc.stderr


# ------------------------------------------------------------------ data sets streamed in many small PDUs
def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def _send_streamed(tmp_path: Path, port: int, sizes: list[int]) -> tuple[dict, float]:
    """Stream data sets of these sizes from a child process; this process's peak RSS growth meanwhile."""
    folder = tmp_path / "sent"
    folder.mkdir()
    baseline, peak, done = _rss_mib(), [0.0], [False]

    def watch() -> None:
        while not done[0]:
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.01)

    import threading

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        proc = subprocess.run([sys.executable, "-c", hostile.STREAMED_STORE_SENDER, str(port), str(folder), ",".join(map(str, sizes))],
                              capture_output=True, text=True, timeout=240)
    finally:
        done[0] = True
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return __import__("json").loads(proc.stdout.strip().splitlines()[-1]), peak[0] - baseline


@pytest.fixture
def capped_node(tmp_path, monkeypatch):
    received = tmp_path / "received"  # pynetdicom's temporary files land here: a partial one left behind is seen
    received.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(received))
    monkeypatch.setattr(pynetdicom_config, "STORE_RECV_CHUNKED_DATASET", False)  # restored after the test
    servers = []

    def start(**settings):
        server, port = _start(tmp_path, max_pdu_bytes=16 * 1024, **settings)
        servers.append(server)
        return server, port

    yield start, received
    for server in servers:
        server.shutdown()


def _stored(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "work").rglob("*.dcm"))


def test_a_dataset_streamed_past_the_cap_is_refused_unbuffered_and_the_node_serves_on(tmp_path, capped_node):
    start, received = capped_node
    server, port = start(max_dataset_bytes=2 << 20)
    result, growth = _send_streamed(tmp_path, port, [48 << 20, 256 << 10])
    assert result["pdu"] == 16 * 1024  # 48 MiB in some 3,000 P-DATA PDUs
    assert result["statuses"] == [0xA700, 0x0000]  # Out of Resources, then the same association stores a small one
    assert growth < 24, f"node RSS grew {growth:.0f} MiB while 48 MiB streamed in"
    assert len(_stored(tmp_path)) == 1 and _stored(tmp_path)[0].stat().st_size > 256 << 10
    assert not list(received.iterdir())  # no partial file left
    assert echo(port)


def test_an_association_past_its_byte_cap_is_aborted_and_its_partial_file_removed(tmp_path, capped_node):
    start, received = capped_node
    server, port = start(max_dataset_bytes=2 << 20, max_association_bytes=5 << 20)
    result, _ = _send_streamed(tmp_path, port, [(3 << 19)] * 5)  # 1.5 MiB each: the fourth passes 5 MiB
    statuses = result["statuses"]
    assert statuses[:3] == [0, 0, 0] and statuses[3] is None and statuses[4] is None, statuses
    assert len(_stored(tmp_path)) == 3
    deadline = time.monotonic() + 10
    while list(received.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(received.iterdir())
    assert echo(port)
