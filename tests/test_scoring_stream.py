"""``score_items``, the public scoring stream: every item once, complete studies after their last
item, evidence for positives, the probabilities and decisions of ``score_paths``, one threshold."""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd
import pytest

from monai_fracture.scoring import Classifier, Evidence, ScoredBatch, StudyScore, score_items, score_paths
from monai_fracture.scoring.catalog import build_catalog, walk_inputs
from test_scoring_support import image_files, make_demo_folder, make_model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    folder = make_demo_folder(root / "in", n=8, seed=4, size=64)
    model = make_model(root / "model", image_files(folder))
    classifier = Classifier(model)
    items = build_catalog(walk_inputs([folder]), ct_enabled=False).items
    events = list(score_items(items, classifier, batch_size=3))
    return folder, model, classifier, items, events


def _scores(events):
    return [s for e in events if isinstance(e, ScoredBatch) for s in e.scores]


def test_every_item_once_and_every_study_complete_after_its_last_item(demo):
    _, _, _, items, events = demo
    scores = _scores(events)
    assert sorted(p for s in scores for p in s.item.paths) == sorted(p for i in items for p in i.paths)
    assert all(s.result is not None and len(s.rows) == len(s.item.paths) for s in scores)
    members = defaultdict(list)
    for item in items:
        members[(item.family, item.study_uid)].append(item)
    studies = [e for e in events if isinstance(e, StudyScore)]
    assert len(studies) == len(members) >= 3 and {s.key for s in studies} == set(members)
    for study in studies:
        assert sorted(study.paths) == sorted(p for i in members[study.key] for p in i.paths)
        assert sorted(r.sop_uids for r in study.results) == sorted(i.sop_uids for i in members[study.key])
        # after the batch that scored its last item, never before
        position = events.index(study)
        last = max(n for n, e in enumerate(events) if isinstance(e, ScoredBatch)
                   for s in e.scores if s.item in members[study.key])
        assert position > last


def test_positives_get_their_region_before_their_study(demo):
    _, _, classifier, _, events = demo
    scores = _scores(events)
    positives = {s.item.paths[0] for s in scores if s.result.positive}
    assert positives and len(positives) < len(scores), "the model should give both decisions"
    evidence = [e for e in events if isinstance(e, Evidence)]
    assert {e.item.paths[0] for e in evidence} == positives
    assert all(e.error is None and e.region is not None and e.heatmap is None for e in evidence)
    in_studies = {r.sop_uids: r for e in events if isinstance(e, StudyScore) for r in e.results}
    for e in evidence:
        assert in_studies[e.result.sop_uids].region == e.region
    for s in scores:  # the row says what the result decided
        assert s.rows[0].prediction == ("1" if s.result.probability >= classifier.threshold else "0")


def test_same_probabilities_and_decisions_as_score_paths(demo, tmp_path):
    folder, _, classifier, _, events = demo
    table = score_paths([folder], tmp_path / "out", model=classifier, write_dicom=False, batch_size=3).results
    scored = table[table["status"] == "scored"].set_index("path")
    stream = {row.path: row for s in _scores(events) for row in s.rows}
    assert set(stream) == set(scored.index)
    for path, row in stream.items():
        assert (row.probability, row.prediction, row.threshold) == tuple(scored.loc[path, ["probability", "prediction", "threshold"]])


def test_threshold_is_honoured_with_a_given_classifier(demo, tmp_path):
    folder, _, classifier, items, _ = demo
    everything = [s for e in score_items(items, classifier, threshold=0.0) if isinstance(e, ScoredBatch) for s in e.scores]
    assert all(s.result.positive and s.rows[0].prediction == "1" for s in everything)
    table = score_paths([folder], tmp_path / "out", model=classifier, threshold=0.0, write_dicom=False).results
    scored = table[table["status"] == "scored"]
    assert set(scored["prediction"]) == {"1"} and set(scored["threshold"]) == {"0"}
    with pytest.raises(ValueError, match="device"):
        score_paths([folder], tmp_path / "other", model=classifier, device="meta")


def test_resumed_items_complete_their_study_without_being_scored_again(demo):
    _, _, classifier, items, events = demo
    first = items[0]
    earlier = next(s.result for s in _scores(events) if s.item == first)
    stream = list(score_items(items[1:], classifier, resumed=[(first, earlier)]))
    assert first not in [s.item for s in _scores(stream)]
    study = next(e for e in stream if isinstance(e, StudyScore) and e.study_uid == first.study_uid)
    assert earlier.sop_uids in [r.sop_uids for r in study.results] and first.paths[0] in study.paths


def test_the_run_reports_the_files_each_writer_wrote(demo, tmp_path):
    folder, _, classifier, _, _ = demo
    summary = score_paths([folder], tmp_path / "out", model=classifier, report_workers=0, outputs="sr,kos,pr,sc")
    manifest = json.loads(summary.manifest.read_text())
    listed = {name: {tmp_path / "out" / p for p in paths} for name, paths in manifest["dicom_files"].items()}
    on_disk = {p for p in (tmp_path / "out" / "dicom").rglob("*.dcm")}
    assert set().union(*listed.values()) == on_disk == set(summary.output_files())
    for name, prefix in (("sr", "SR_"), ("kos", "KO_"), ("pr", "PR_"), ("sc", "SC_")):
        assert listed[name] and all(p.name.startswith(prefix) for p in listed[name])
    assert manifest["dicom_outputs"] == len(on_disk)
    # a resumed run still reports what the first one wrote (from the journal)
    again = score_paths([folder], tmp_path / "out", model=classifier, report_workers=0, outputs="sr,kos,pr,sc")
    assert set(again.output_files()) == on_disk
    assert pd.read_csv(again.results_csv)["status"].eq("scored").sum() == len(image_files(folder))
