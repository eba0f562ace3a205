"""Settings of the DICOM node, from a JSON/YAML file and/or CLI flags.

One dataclass holds every knob so that the file format, the CLI and the tests agree on names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



def valid_ae_title(title: object) -> bool:
    """DICOM AE title rule (PS3.5 VR AE): 1-16 characters, not only spaces, no backslash or control codes."""
    return (
        isinstance(title, str)
        and 0 < len(title) <= 16
        and title.strip() != ""
        and all(32 <= ord(c) < 127 and c != "\\" for c in title)
    )


#: Environment variable holding the STOW-RS password (never a command-line flag: ``ps`` shows those).
SECRET_ENVIRONMENT = "MONAI_FRACTURE_STOW_PASSWORD"


def read_secret(value: str | None, path: str | None, environment: str) -> str | None:
    """A secret from (in order) its file, the environment, or the config value; the file's last newline dropped."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise ValueError(f"{path}: cannot read the secret file: {err.strerror or err}") from None
    return os.environ.get(environment) or value


@dataclass(frozen=True)
class Destination:
    """Where results go back: a C-STORE SCP (usually the PACS that sent the study)."""

    ae_title: str
    host: str
    port: int


@dataclass
class NodeConfig:
    """Everything `monai-fracture serve` needs; file keys use the same names."""

    work_dir: Path
    model: str | None = None  # radiograph model (folder, bundle folder or file)
    ct_model: str | None = None  # optional CT model; CT studies fail without one
    ae_title: str = "MONAI_FRACTURE"
    bind_address: str = "127.0.0.1"
    port: int = 11112
    # Calling AE titles allowed to associate; an empty list accepts any caller (logged as a warning).
    allowed_calling_aets: list[str] = field(default_factory=list)
    destination: Destination | None = None
    stow_url: str | None = None  # DICOMweb base URL: results go by STOW-RS instead of C-STORE
    stow_username: str | None = None
    stow_password: str | None = None  # in a config file only; on the command line use a file or the environment
    stow_password_file: str | None = None  # read at start (also MONAI_FRACTURE_STOW_PASSWORD)
    study_idle_timeout_s: float = 10.0  # a study is complete this long after its last instance
    max_pending_studies: int = 100
    max_pending_bytes: int = 4 * 1024**3
    max_send_attempts: int = 3
    retry_delay_s: float = 5.0
    poll_interval_s: float = 0.5
    device: str = "cpu"
    batch_size: int = 16
    threshold: float | None = None
    keep_done: bool = False  # keep finished studies under work_dir/done instead of deleting them
    # Hardening (pacs/guard.py): bounded PDUs, deadlines, connection slots, optional TLS.
    max_pdu_bytes: int = 1 << 20
    request_timeout_s: float = 10.0  # TLS handshake + A-ASSOCIATE-RQ within this
    pdu_timeout_s: float = 60.0
    network_timeout_s: float = 60.0  # idle association closed after this
    dimse_timeout_s: float = 60.0
    max_associations: int = 32
    max_associations_per_peer: int = 24  # one PACS may push ~20 studies at once; 8 slots stay for others
    # One received data set (to a temporary file as it arrives; larger: "Out of Resources"), and all over one association
    # (larger: aborted). 1 GiB is above any file the scorer decodes (2**28 values); 4 GiB matches max_pending_bytes.
    max_dataset_bytes: int = 1 << 30
    max_association_bytes: int = 4 << 30
    tls_cert: str | None = None  # PEM certificate chain: the node accepts TLS only
    tls_key: str | None = None
    tls_client_ca: str | None = None  # callers must present a certificate signed by this CA

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        if isinstance(self.destination, dict):
            self.destination = Destination(**self.destination)
        elif isinstance(self.destination, (list, tuple)):
            self.destination = Destination(*self.destination)
        for title in [self.ae_title, *self.allowed_calling_aets] + (
            [self.destination.ae_title] if self.destination else []
        ):
            if not valid_ae_title(title):
                raise ValueError(f"invalid AE title {title!r} (1-16 characters, no backslash or control characters)")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"invalid port {self.port}")
        if self.study_idle_timeout_s < 0:
            raise ValueError("study_idle_timeout_s must be >= 0")
        if self.max_pending_studies < 1 or self.max_pending_bytes < 1:
            raise ValueError("max_pending_studies and max_pending_bytes must be positive")
        if min(self.max_pdu_bytes, self.max_associations, self.max_associations_per_peer, self.max_dataset_bytes,
               self.max_association_bytes) < 1 or not \
                min(self.request_timeout_s, self.pdu_timeout_s, self.network_timeout_s, self.dimse_timeout_s) > 0:
            raise ValueError("PDU size, association limits and timeouts must be positive")
        if bool(self.tls_cert) != bool(self.tls_key) or (self.tls_client_ca and not self.tls_cert):
            raise ValueError("TLS needs both tls_cert and tls_key (tls_client_ca only with them)")
        self.stow_password = read_secret(self.stow_password, self.stow_password_file, SECRET_ENVIRONMENT)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (passwords left out)."""
        out = dataclasses.asdict(self)
        out["work_dir"] = str(self.work_dir)
        out.pop("stow_password", None)
        return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML settings file into a plain dict (unknown keys are an error later)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read config: {err}") from err
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
        raise ValueError(f"{path}: invalid config: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: config must be a mapping of settings")
    return data


def build_config(file_values: dict[str, Any] | None = None, **overrides: Any) -> NodeConfig:
    """Merge file settings with overrides (CLI flags); `None` overrides leave the file value."""
    values: dict[str, Any] = dict(file_values or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(NodeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "work_dir" not in values:
        raise ValueError("work_dir is required (queue folder for received studies)")
    return NodeConfig(**values)
