"""MMMU (interleaved `<image k>`, literal-list options, open questions) and MMStar (letters)."""

from __future__ import annotations

import pytest

from spark_vl.data.prompts import user_content
from spark_vl.eval import get_benchmark, load_benchmark
from tests.unit._eval_fixtures import image_struct, score_only, write_parquet


def _mmmu_row(uid, question, options, answer, qtype="multiple-choice", images=1):
    row = {"id": uid, "question": question, "options": str(options), "explanation": "", "answer": answer,
           "question_type": qtype, "subfield": "fixture", "img_type": "['Diagrams']", "topic_difficulty": "Easy"}
    for k in range(1, 8):
        row[f"image_{k}"] = image_struct(f"{uid}-{k}.png", (10 * k, 0, 0)) if k <= images else None
    return row


@pytest.fixture
def mmmu(tmp_path):
    rows = [
        _mmmu_row("validation_Art_1", "Compare <image 1> and <image 2>; is <image 1> older?",
                  ["yes", "no", "<image 3>"], "B", images=3),
        _mmmu_row("validation_Art_2", "<image 1> What animal?", ["cat", "dog"], "A"),
        _mmmu_row("validation_Math_3", "<image 1> Compute.", [], "24", qtype="open"),
        _mmmu_row("validation_Math_4", "<image 1> Which?", ["1", "2", "3", "4"], "C"),
        _mmmu_row("validation_Math_5", "<image 1> <image 2> Broken.", ["1", "2"], "A", images=1),
    ]
    return write_parquet(tmp_path / "MMMU", "validation", rows)


MMMU_PREDICTIONS = {
    "validation_Art_1": "\\boxed{B}",
    "validation_Art_2": "I think it is a cat.",  # no box; the official parser finds the option text
    "validation_Math_3": "\\boxed{24.0}",
    "validation_Math_4": "Hmm.",  # nothing to read: wrong, with a 1/4 guess reported separately
    "validation_Math_5": "\\boxed{A}",
}


def test_mmmu_interleaved_images(mmmu):
    lb = load_benchmark(get_benchmark("mmmu"), str(mmmu))
    first = lb.samples[0]
    assert first.category == "Art" and first.choices == ["yes", "no", "<image 3>"]
    assert len(first.images) == 3 and [im["path"] for im in first.images] == [
        "validation_Art_1-1.png", "validation_Art_1-2.png", "validation_Art_1-3.png"]
    assert "[image 1] older" in first.problem  # a repeated mention stays text: one picture, one image part
    content = user_content(first.problem, len(first.images))
    assert [part["type"] for part in content].count("image") == 3
    assert content[0]["type"] == "text" and content[1]["type"] == "image"
    assert lb.samples[4].images[1] is None  # referenced but absent: reported as an image error at generation


def test_mmmu_by_hand(tmp_path, mmmu):
    spark = score_only(tmp_path, "mmmu", mmmu, MMMU_PREDICTIONS, "spark")
    assert spark["accuracy"] == pytest.approx(3 / 5) and spark["no_answer"] == 2
    official = score_only(tmp_path, "mmmu", mmmu, MMMU_PREDICTIONS, "official")
    assert official["accuracy"] == pytest.approx(4 / 5)
    assert official["random_fallback_accuracy"] == pytest.approx((4 + 0.25) / 5)
    assert official["by_subject"]["Math"] == {"accuracy": pytest.approx(2 / 3), "n": 3}


@pytest.fixture
def mmstar(tmp_path):
    rows = [{"index": i, "question": f"Q{i}?\nOptions: A: x, B: y, C: z, D: w", "image": image_struct(f"{i}.png"),
             "answer": a, "category": cat, "l2_category": "fixture", "meta_info": {"source": "x", "split": "val"}}
            for i, (a, cat) in enumerate([("A", "math"), ("B", "math"), ("D", "logical reasoning"),
                                          ("D", "logical reasoning")])]
    return write_parquet(tmp_path / "MMStar", "val", rows)


def test_mmstar_by_hand(tmp_path, mmstar):
    preds = {"0": "\\boxed{A}", "1": "\\boxed{(B)}", "2": "\\boxed{C}", "3": "Answer: D"}
    spark = score_only(tmp_path, "mmstar", mmstar, preds, "spark")
    assert spark["accuracy"] == pytest.approx(2 / 4)
    assert spark["by_category"]["math"]["accuracy"] == 1.0
    assert score_only(tmp_path, "mmstar", mmstar, preds, "official")["accuracy"] == pytest.approx(3 / 4)


def test_mmstar_from_a_datasets_folder(tmp_path):
    """A `save_to_disk` DatasetDict with a real Image feature reads the same as parquet (images stay undecoded)."""
    datasets = pytest.importorskip("datasets")
    from tests.unit._eval_fixtures import png

    features = datasets.Features({"index": datasets.Value("int64"), "question": datasets.Value("string"),
                                  "image": datasets.Image(), "answer": datasets.Value("string"),
                                  "category": datasets.Value("string"), "l2_category": datasets.Value("string")})
    rows = [{"index": i, "question": f"Q{i}? A: x B: y", "image": {"bytes": png(), "path": None}, "answer": "A",
             "category": "math", "l2_category": "algebra"} for i in range(3)]
    ds = datasets.DatasetDict({"val": datasets.Dataset.from_list(rows, features=features)})
    ds.save_to_disk(str(tmp_path / "mmstar"))
    lb = load_benchmark(get_benchmark("mmstar"), str(tmp_path / "mmstar"))
    assert [s.uid for s in lb.samples] == ["0", "1", "2"]
    assert isinstance(lb.samples[0].images[0], dict) and lb.samples[0].images[0]["bytes"]
