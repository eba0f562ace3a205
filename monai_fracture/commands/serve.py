"""``monai-fracture serve``: run the DICOM node (Storage SCP that scores studies and sends SR/KOS back)."""

from __future__ import annotations

import argparse
import logging

HELP = "run a DICOM node: receive studies (C-STORE), score them, send SR + KOS back (C-STORE or STOW-RS)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML settings (keys as in NodeConfig); flags override it")
    parser.add_argument("--work-dir", help="queue folder for received studies (survives restarts)")
    parser.add_argument("-m", "--model", help="model folder, bundle folder or model file")
    parser.add_argument("--ct-model", help="CT model (folder or file), optional")
    parser.add_argument("--ae-title", help="our AE title (default MONAI_FRACTURE)")
    parser.add_argument("--bind", dest="bind_address", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="DICOM port (default 11112)")
    parser.add_argument("--allow-aet", dest="allowed_calling_aets", action="append", metavar="AET",
                        help="calling AE title allowed to send (repeat; none = any)")
    parser.add_argument("--dest", metavar="AET@HOST:PORT", help="where results go by C-STORE, e.g. ORTHANC@127.0.0.1:4242")
    parser.add_argument("--stow-url", help="DICOMweb base URL: send results by STOW-RS instead of C-STORE")
    parser.add_argument("--stow-user", dest="stow_username", help="HTTP basic user for STOW-RS")
    parser.add_argument("--stow-password", help=argparse.SUPPRESS)  # refused: argv is visible in ps
    parser.add_argument("--stow-password-file", metavar="FILE",
                        help="file holding the STOW-RS password (or set MONAI_FRACTURE_STOW_PASSWORD)")
    parser.add_argument("--max-pdu", dest="max_pdu_bytes", type=int, help="largest PDU accepted and announced (default 1 MiB)")
    parser.add_argument("--request-timeout", dest="request_timeout_s", type=float,
                        help="seconds a caller has for the TLS handshake and A-ASSOCIATE-RQ (default 10)")
    parser.add_argument("--max-associations", type=int, help="open connections in all (default 32)")
    parser.add_argument("--max-associations-per-peer", type=int, help="open connections per caller address (default 24)")
    parser.add_argument("--tls-cert", metavar="PEM", help="certificate chain: accept DICOM over TLS only")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    parser.add_argument("--idle-timeout", dest="study_idle_timeout_s", type=float,
                        help="seconds after a study's last instance before it is scored (default 10)")
    parser.add_argument("--max-pending-studies", type=int, help="queue bound in studies (default 100)")
    parser.add_argument("--max-pending-bytes", type=int, help="queue bound in bytes (default 4 GiB)")
    parser.add_argument("--max-send-attempts", type=int, help="tries before a study is marked failed (default 3)")
    parser.add_argument("--retry-delay", dest="retry_delay_s", type=float, help="seconds between send tries (default 5)")
    parser.add_argument("--device", help="torch device for scoring (default cpu)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default 16)")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the model's)")
    parser.add_argument("--keep-done", action="store_true", default=None, help="keep finished studies under WORK_DIR/done")


def parse_destination(text: str) -> dict[str, object]:
    """``AET@HOST:PORT`` -> destination mapping; the error names the expected form."""
    try:
        ae_title, address = text.split("@", 1)
        host, port = address.rsplit(":", 1)
        return {"ae_title": ae_title, "host": host, "port": int(port)}
    except ValueError as err:
        raise ValueError(f"--dest {text!r}: expected AET@HOST:PORT") from err


def run(args: argparse.Namespace) -> int:
    from monai_fracture.pacs.config import build_config, read_config_file
    from monai_fracture.pacs.node import DicomNode

    if args.stow_password is not None:
        logger.error("--stow-password would show the password to every user (ps): use --stow-password-file FILE "
                     "or the MONAI_FRACTURE_STOW_PASSWORD environment variable")
        return 2
    try:
        file_values = read_config_file(args.config) if args.config else {}
        overrides = {key: getattr(args, key) for key in (
            "work_dir", "model", "ct_model", "ae_title", "bind_address", "port", "allowed_calling_aets", "stow_url",
            "stow_username", "stow_password_file", "study_idle_timeout_s", "max_pending_studies", "max_pending_bytes",
            "max_send_attempts", "retry_delay_s", "device", "batch_size", "threshold", "keep_done",
            "max_pdu_bytes", "request_timeout_s", "max_associations", "max_associations_per_peer", "tls_cert", "tls_key",
            "tls_client_ca")}
        if args.dest:
            overrides["destination"] = parse_destination(args.dest)
        config = build_config(file_values, **overrides)
        if not logging.getLogger().isEnabledFor(logging.INFO):
            logging.getLogger("monai_fracture.pacs").setLevel(logging.INFO)  # a server should say what it does
        if getattr(args, "verbose", 0) < 2:  # per-message chatter of the libraries only with -vv
            for name in ("pynetdicom", "highdicom"):
                logging.getLogger(name).setLevel(logging.WARNING)
        node = DicomNode(config)
    except ValueError as err:
        logger.error("%s", err)
        return 2
    from monai_fracture.model.package import ModelPackageError

    try:
        node.serve_forever()
    except (OSError, ValueError, ModelPackageError) as err:  # port in use, unusable model, bad settings
        logger.error("serve: %s", err)
        return 1
    return 0
