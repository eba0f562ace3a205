"""A DICOMweb server as a scoring source: QIDO-RS to find studies and instances, WADO-RS to fetch them.

Studies are searched page by page (``limit``/``offset``) and their instances listed study by study,
so the archive's instance list is never held whole. Instances are fetched one at a time into a spool
folder (atomic writes: a killed download leaves no partial file). Every request is retried with
exponential backoff on timeouts, lost connections and 408/429/5xx answers; after the last attempt
:class:`DicomwebError` names the server. Secrets (bearer tokens, other headers) come from a file or
the environment, never from the command line, which ``ps`` shows to every user.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from monai_fracture.files import atomic_file, stable_hash

logger = logging.getLogger(__name__)

SCHEME_PREFIX = "dicomweb+"
#: Environment variables read when no file is given (never a command-line value: ``ps`` shows those).
TOKEN_ENVIRONMENT = "MONAI_FRACTURE_DICOMWEB_TOKEN"
HEADERS_ENVIRONMENT = "MONAI_FRACTURE_DICOMWEB_HEADERS"
RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Objects this pipeline writes (and other derived, non-image objects): listed, never downloaded.
NON_IMAGE_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
)
_T = TypeVar("_T")
_STUDY_UID, _SERIES_UID, _SOP_UID, _SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"


class DicomwebError(Exception):
    """The DICOMweb server could not be reached or refused a request (the message names the server)."""


def is_dicomweb_url(text: str) -> bool:
    return text.lower().startswith((SCHEME_PREFIX + "http://", SCHEME_PREFIX + "https://"))


def base_url(text: str, prefix: str = SCHEME_PREFIX) -> str:
    """``dicomweb+https://pacs/dicom-web`` -> ``https://pacs/dicom-web`` (checked: scheme and host)."""
    url = text[len(prefix):] if text.lower().startswith(prefix) else text
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text}: not a DICOMweb URL (expected {prefix}http(s)://HOST[:PORT]/PATH)")
    if parts.username or parts.password:
        raise ValueError(f"{parts.hostname}: credentials in the URL are refused (ps shows them): "
                         f"use --dicomweb-token-file or ${TOKEN_ENVIRONMENT}")
    return url.rstrip("/")


def parse_query(text: str | None) -> dict[str, str]:
    """``"ModalitiesInStudy=DX&StudyDate=20240101-20241231"`` -> QIDO-RS search filters."""
    if not text:
        return {}
    pairs = parse_qsl(text, keep_blank_values=False, strict_parsing=True)
    return dict(pairs)


def read_headers(token_file: str | None = None, header_file: str | None = None) -> dict[str, str]:
    """HTTP headers for the server: ``Authorization: Bearer TOKEN`` from the token file (or
    $MONAI_FRACTURE_DICOMWEB_TOKEN), plus ``Name: value`` lines from the header file (or
    $MONAI_FRACTURE_DICOMWEB_HEADERS)."""
    headers: dict[str, str] = {}
    token = _read_secret(token_file) if token_file else os.environ.get(TOKEN_ENVIRONMENT)
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    lines = _read_secret(header_file) if header_file else os.environ.get(HEADERS_ENVIRONMENT, "")
    for number, line in enumerate(lines.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            where = header_file or HEADERS_ENVIRONMENT
            raise ValueError(f"{where}: line {number} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the secret file: {err.strerror or err}") from None


@dataclass(frozen=True)
class Instance:
    """One instance of a study as QIDO-RS lists it; ``name`` is how results.csv refers to it."""

    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def name(self) -> str:
        return f"dicomweb:{self.study_uid}/{self.series_uid}/{self.sop_uid}"

    def spool_path(self, spool: Path) -> Path:
        """Hashed names: nothing from a tag value becomes a path as is."""
        return study_spool(spool, self.study_uid) / f"{stable_hash(self.series_uid, self.sop_uid)}.dcm"


def study_spool(spool: Path, study_uid: str) -> Path:
    """The spool folder of one study."""
    return spool / stable_hash(study_uid)


class DicomwebSource:
    """QIDO-RS / WADO-RS / STOW-RS against one server, with retries and a clear error when it is down."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, ca_bundle: str | None = None,
                 timeout_s: float = 60.0, attempts: int = 4, backoff_s: float = 0.5, page_size: int = 500) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.url = base_url(url)
        self.attempts, self.backoff_s, self.page_size = max(1, attempts), backoff_s, page_size
        self.session = requests.Session()
        self.session.headers.update(headers or {})
        if ca_bundle:
            if not Path(ca_bundle).is_file():
                raise ValueError(f"{ca_bundle}: CA bundle not found")
            self.session.verify = ca_bundle
        self.client = DICOMwebClient(url=self.url, session=self.session, timeout=timeout_s)
        self.client.set_http_retry_params(retry=False)  # retried here, also on lost connections

    def describe(self) -> str:
        return f"DICOMweb server {self.url}"

    def _call(self, what: str, function: Callable[[], _T]) -> _T:
        import requests

        for attempt in range(1, self.attempts + 1):
            try:
                return function()
            except requests.HTTPError as err:
                status = err.response.status_code if err.response is not None else None
                if status not in RETRIABLE_STATUS or attempt == self.attempts:
                    raise DicomwebError(f"{self.describe()}: {what}: HTTP {status} {err}") from None
                reason = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as err:
                if attempt == self.attempts:
                    raise DicomwebError(f"{self.describe()}: {what}: unreachable after {attempt} attempts "
                                        f"({type(err).__name__})") from None
                reason = type(err).__name__
            delay = self.backoff_s * 2 ** (attempt - 1)
            logger.warning("%s: %s: %s, retrying in %.1f s (attempt %d of %d)", self.describe(), what, reason, delay,
                           attempt + 1, self.attempts)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- QIDO-RS -----------------------------------------------------------------------------
    def studies(self, filters: dict[str, str]) -> Iterator[str]:
        """Study Instance UIDs matching ``filters``, one page at a time, each once."""
        seen: set[str] = set()
        offset = 0
        while True:
            page = self._call(f"QIDO-RS studies offset {offset}", lambda: self.client.search_for_studies(
                search_filters=filters, limit=self.page_size, offset=offset, fields=[_STUDY_UID]))
            for item in page:
                uid = _value(item, _STUDY_UID)
                if uid and uid not in seen:
                    seen.add(uid)
                    yield uid
            if len(page) < self.page_size:
                return
            offset += len(page)

    def instances(self, study_uid: str) -> list[Instance]:
        """The image instances of one study (paged), sorted by series and SOP UID; derived objects
        (SR, key objects, presentation states: ours among them) are left out."""
        found: dict[str, Instance] = {}
        offset = 0
        while True:
            page = self._call(f"QIDO-RS instances of study {study_uid}", lambda: self.client.search_for_instances(
                study_instance_uid=study_uid, limit=self.page_size, offset=offset,
                fields=[_SERIES_UID, _SOP_UID, _SOP_CLASS]))
            for item in page:
                sop, series = _value(item, _SOP_UID), _value(item, _SERIES_UID)
                if sop and series and not _value(item, _SOP_CLASS).startswith(NON_IMAGE_CLASS_PREFIXES):
                    found[sop] = Instance(study_uid, series, sop)
            if len(page) < self.page_size:
                break
            offset += len(page)
        return sorted(found.values(), key=lambda i: (i.series_uid, i.sop_uid))

    # -- WADO-RS -----------------------------------------------------------------------------
    def download(self, instance: Instance, spool: Path) -> Path:
        """Fetch one instance into the spool (atomically); an existing file is kept, not fetched again."""
        from pydicom import dcmwrite

        target = instance.spool_path(spool)
        if target.is_file():
            return target
        dataset = self._call(f"WADO-RS {instance.name}", lambda: self.client.retrieve_instance(
            instance.study_uid, instance.series_uid, instance.sop_uid))
        with atomic_file(target) as handle:
            dcmwrite(handle, dataset, enforce_file_format=True)
        return target

    # -- STOW-RS -----------------------------------------------------------------------------
    def store(self, files: Sequence[Path]) -> None:
        import pydicom

        datasets = [pydicom.dcmread(f) for f in files]
        response = self._call(f"STOW-RS of {len(datasets)} objects", lambda: self.client.store_instances(datasets))
        failed = list(getattr(response, "FailedSOPSequence", None) or [])
        if failed:
            raise DicomwebError(f"{self.describe()}: STOW-RS: {len(failed)} of {len(datasets)} objects refused")


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])
