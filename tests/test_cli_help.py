"""What `--help` tells a user: what the tool is (not how the dispatcher works) and the real default model."""

from __future__ import annotations

from pathlib import Path

from monai_fracture.cli import build_parser


def _help(*verb: str) -> str:
    parser = build_parser(list(verb))
    if not verb:
        return parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return sub.choices[verb[0]].format_help()


def test_top_level_help_speaks_to_users() -> None:
    text = " ".join(_help().split())
    assert "fracture classification" in text
    assert "not a medical device" in text
    assert "dispatcher" not in text and "monai_fracture.commands" not in text


def test_score_help_names_the_model_used_without_model(monkeypatch) -> None:
    from monai_fracture.model.classifier import default_model_path

    monkeypatch.delenv("MONAI_FRACTURE_MODEL", raising=False)
    text = "".join(_help("score").split())  # argparse wraps long paths
    found = default_model_path()
    assert found is not None, "the shipped model is missing from this checkout"
    shipped = Path(found).relative_to(Path(found).parents[3]).as_posix()  # bundles/fracture_classification/models/...
    assert f"default:$MONAI_FRACTURE_MODEL,elsetheshippedFracAtlasmodel{shipped}" in text, (shipped, text)
    assert "--report" in text and "--labels" in text


def test_score_help_lists_every_backend_of_the_table() -> None:
    from monai_fracture.model.backend_table import BACKEND_TABLE

    text = " ".join(_help("score").split())
    for spec in BACKEND_TABLE:
        assert f"{spec.name} ({spec.description}" in text, spec.name
    assert "fp16 (float16 autocast, CUDA only)" in text
