"""``monai-fracture score dicomweb+http(s)://HOST/PATH --query ... --out DIR``: the DICOMweb options of
``score`` and the run that uses them (docs/scaling.md, "Scoring straight from a PACS over DICOMweb")."""

from __future__ import annotations

import argparse
import sys


from monai_fracture.commands.run_errors import run_guarded, usage
from monai_fracture.sources.dicomweb import HEADERS_ENVIRONMENT, TOKEN_ENVIRONMENT, is_dicomweb_url

STOW_PREFIX = "stowrs+"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DICOMweb source (INPUT dicomweb+http(s)://HOST/PATH)")
    group.add_argument("--query", metavar="QIDO", help="QIDO-RS study search, e.g. "
                       "'ModalitiesInStudy=DX&StudyDate=20240101-20241231' (default: every study, unless --study)")
    group.add_argument("--study", action="append", default=[], metavar="UID", help="a Study Instance UID (repeatable)")
    group.add_argument("--study-list", action="append", default=[], metavar="FILE",
                       help="file of Study Instance UIDs, one per line (# comments)")
    group.add_argument("--dicomweb-token-file", metavar="FILE",
                       help=f"bearer token for the server (or set {TOKEN_ENVIRONMENT})")
    group.add_argument("--dicomweb-header-file", metavar="FILE",
                       help=f"extra HTTP headers, 'Name: value' per line (or set {HEADERS_ENVIRONMENT})")
    group.add_argument("--ca-bundle", metavar="PEM", help="CA certificates for https (default: the system's)")
    group.add_argument("--keep-downloads", action="store_true",
                       help="keep the fetched instances in DIR/.dicomweb-spool (default: removed once scored)")
    group.add_argument("--chunk-images", type=int, default=256, metavar="N",
                       help="instances fetched ahead and scored together, whole studies (default 256)")
    group.add_argument("--send", metavar="URL", help="STOW-RS the run's SR/KOS/GSPS to stowrs+http(s)://HOST/PATH "
                       "(the source's auth headers go along only to the same host)")


def wants_dicomweb(args: argparse.Namespace) -> bool:
    return any(is_dicomweb_url(str(i)) for i in args.inputs) or args.send is not None or bool(
        args.query or args.study or args.study_list)


def run(args: argparse.Namespace) -> int:
    """Called by ``score`` once the common options are checked; same exit codes."""
    from urllib.parse import urlsplit

    from monai_fracture.reports import parse_outputs
    from monai_fracture.scoring.dicomweb_run import score_dicomweb, study_list
    from monai_fracture.scoring.ray_engine import engine_from_arguments
    from monai_fracture.sources.dicomweb import DicomwebError, DicomwebSource, base_url, parse_query, read_headers

    if len(args.inputs) != 1 or not is_dicomweb_url(args.inputs[0]):
        return usage("--query, --study, --study-list and --send need exactly one INPUT dicomweb+http(s)://HOST/PATH")
    if args.shard or args.report or args.ct_model:
        return usage("--shard, --report and --ct-model are not available with a DICOMweb source yet")
    if args.query and (args.study or args.study_list):
        return usage("give --query or --study/--study-list, not both")
    if args.chunk_images < 1:
        return usage("--chunk-images must be >= 1")
    try:
        headers = read_headers(args.dicomweb_token_file, args.dicomweb_header_file)
        filters = parse_query(args.query)
        source = DicomwebSource(args.inputs[0], headers=headers, ca_bundle=args.ca_bundle)
        send_to = None
        if args.send is not None:
            if not args.send.lower().startswith(STOW_PREFIX):
                raise ValueError(f"--send {args.send}: expected stowrs+http(s)://HOST/PATH")
            url = base_url(args.send, STOW_PREFIX)
            same_host = urlsplit(url)[:2] == urlsplit(source.url)[:2]
            send_to = DicomwebSource(url, headers=headers if same_host else None, ca_bundle=args.ca_bundle)
        outputs = parse_outputs(args.outputs, heatmaps=args.heatmaps)
        explicit = list(study_list(args.study, args.study_list))  # unreadable lists are reported before the run
        engine = engine_from_arguments(args)
    except ValueError as err:
        return usage(str(err))
    studies = iter(explicit) if explicit else source.studies(filters)
    outcome = run_guarded(args.out, lambda: score_dicomweb(
        source, args.out, studies=studies, model=args.model, device=args.device, threshold=args.threshold,
        backend=args.backend, send_to=send_to, keep_downloads=args.keep_downloads,
        chunk_images=args.chunk_images, description=args.query or f"{len(explicit)} studies",
        batch_size=args.batch_size, workers=args.workers, heatmaps=args.heatmaps,
        write_dicom=not args.no_dicom, progress=args.progress, outputs=outputs, engine=engine,
    ), extra_usage_errors=(DicomwebError,))
    if isinstance(outcome, int):
        return outcome
    results, counts, code = outcome
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{results} ({summary}){' [interrupted]' if code == 130 else ''}")
    return code



