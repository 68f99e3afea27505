"""Every recipe against a fixture with its real dataset's columns and types, in each source form."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spark_vl.data.images import load_image
from spark_vl.data.prepared import load_samples
from spark_vl.prep.recipes import find_recipe, run

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("data_builders", REPO / "tests/assets/data/builders.py")
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def prepare(name: str, tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / f"out_{name}_{abs(hash(args)) % 10**6}"
    code = run(find_recipe(name), [*args, "--out", str(out)], command=f"test {name}")
    return code, out


def loaded(out: Path):
    result = load_samples(str(out))
    for sample in result.samples:  # every stored image decodes through the trainer's path
        for ref in sample.images:
            assert load_image(ref, result.root).size[0] > 0
    return result


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    return {
        "virl39k": builders.virl39k(tmp), "virl39k_release": builders.virl39k_release(tmp),
        "geometry3k": builders.geometry3k(tmp), "geoqa8k": builders.geoqa8k(tmp),
        "mmk12": builders.mmk12(tmp), "clevr": builders.clevr(tmp), "thinklite": builders.thinklite(tmp),
        "spark": builders.spark_data(tmp), "mathv": builders.mathv360k(tmp), "generic": builders.generic_jsonl(tmp),
    }


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_virl39k(fixtures, tmp_path, form):
    code, out = prepare("virl39k", tmp_path, "--source", fixtures["virl39k"][form])
    assert code == 0
    result = loaded(out)
    by_uid = {s.uid: s for s in result.samples}
    assert len(result.samples) == 6  # the duplicate row is dropped
    assert result.manifest["counts"]["dropped"] == {"duplicate": 1}
    assert by_uid["virl39k-q0"].answer == "17" and by_uid["virl39k-q0"].answer_raw == "\\boxed{17}"
    assert by_uid["virl39k-q1"].answer == "B" and by_uid["virl39k-q1"].choices == ["3", "4", "5"]
    assert by_uid["virl39k-q1"].answer_type == "mcq_letter"
    assert by_uid["virl39k-q2"].answer == "\\frac{3}{4}" and by_uid["virl39k-q2"].answer_type == "float"
    assert by_uid["virl39k-q4"].answer == "Yes"
    assert by_uid["virl39k-q0"].difficulty == {"passrate_32b": 0.0, "passrate_7b": 0.0}
    assert by_uid["virl39k-q1"].difficulty == {"passrate_32b": 0.125}  # missing 7B rate stays unknown
    assert result.manifest["licence"] == "MIT" and result.manifest["recipe"] == "virl39k"
    assert result.manifest["answer_types"]["integer"] == 2  # 17 and 17^\circ


@pytest.mark.parametrize("form", ["folder", "parquet"])
def test_virl39k_release(fixtures, tmp_path, form):
    """The official release: 39Krelease.parquet + unzipped images; -1 pass rates are unknown, not rates."""
    code, out = prepare("virl39k", tmp_path, "--source", fixtures["virl39k_release"][form])
    assert code == 0
    result = loaded(out)
    by_uid = {s.uid: s for s in result.samples}
    assert sorted(by_uid) == [f"virl39k-r{i}" for i in range(5)]
    assert by_uid["virl39k-r0"].difficulty == {"passrate_32b": 0.75, "passrate_7b": 0.5}
    assert by_uid["virl39k-r1"].difficulty == {"passrate_32b": 0.25}  # PassRate_7BBase = -1: not annotated
    assert by_uid["virl39k-r2"].difficulty == {"passrate_32b": 1.0, "passrate_7b": 0.0}  # 0 is a real rate
    assert by_uid["virl39k-r1"].answer == "B" and by_uid["virl39k-r1"].choices == ["3", "4", "5"]
    assert by_uid["virl39k-r0"].answer == "17" and by_uid["virl39k-r0"].answer_raw == "\\boxed{17}"
    assert by_uid["virl39k-r0"].meta == {"source": "R1-OneVision", "qid": "r0"}
    assert by_uid["virl39k-r3"].category == "Spatial Reasoning"
    assert by_uid["virl39k-r4"].images == [] and by_uid["virl39k-r4"].problem == "What is 5 + 7?"  # text-only


def test_virl39k_release_read_raw(fixtures):
    """Training straight from the release parquet maps the pass-rate columns the same way (-1 = unknown)."""
    by_uid = {s.uid: s for s in loaded(Path(fixtures["virl39k_release"]["parquet"])).samples}
    assert by_uid["r1"].difficulty == {"passrate_32b": 0.25} and by_uid["r0"].difficulty["passrate_7b"] == 0.5
    assert by_uid["r4"].images == []


def test_virl39k_release_without_images_fails_early(tmp_path, capsys):
    source = Path(builders.virl39k_release(tmp_path)["folder"])
    for image in (source / "images").iterdir():
        image.unlink()
    code, out = prepare("virl39k", tmp_path, "--source", str(source))
    err = capsys.readouterr().err
    assert code == 2 and "unzip the released images" in err and not (out / "manifest.json").exists()


def test_virl39k_release_difficulty_filter(fixtures, tmp_path):
    """prepare -> difficulty --column passrate_7b --keep (0,1): rows always/never solved and unknown ones sorted."""
    from spark_vl.prep.cli import main

    out, mid = tmp_path / "virl", tmp_path / "virl-mid"
    assert main(["prepare", "virl39k", "--source", fixtures["virl39k_release"]["folder"], "--out", str(out)]) == 0
    assert main(["difficulty", "--data", str(out), "--out", str(mid), "--column", "passrate_7b",
                 "--keep", "(0,1)", "--unknown", "drop"]) == 0
    kept = load_samples(str(mid))
    assert [s.uid for s in kept.samples] == ["virl39k-r0"]  # 0.5; r2 (0.0) and r3 (1.0) outside; r1, r4 unknown
    assert kept.samples[0].difficulty["passrate"] == 0.5
    settings = kept.manifest["difficulty"]
    assert settings["rate_from"] == {"column": 3, "unknown": 2} and settings["histogram"]["unknown"] == 2
    assert main(["difficulty", "--data", str(out), "--out", str(tmp_path / "virl-32b"), "--column", "passrate_32b",
                 "--keep", "[0.2,0.8]"]) == 0
    assert [s.uid for s in load_samples(str(tmp_path / "virl-32b")).samples] == ["virl39k-r0", "virl39k-r1",
                                                                                   "virl39k-r3"]


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_geometry3k_free_and_mcq(fixtures, tmp_path, form):
    code, out = prepare("geometry3k", tmp_path, "--source", fixtures["geometry3k"][form])
    assert code == 0
    free = {s.uid: s for s in loaded(out).samples}
    assert free["geometry3k-0"].answer == "3\\sqrt{2}" and free["geometry3k-0"].choices is None
    assert free["geometry3k-0"].problem == "<image>Find x."
    code, out = prepare("geometry3k", tmp_path, "--source", fixtures["geometry3k"][form], "--mode", "mcq")
    assert code == 0
    mcq = {s.uid: s for s in loaded(out).samples}
    assert mcq["geometry3k-2"].answer == "D" and mcq["geometry3k-2"].answer_type == "mcq_letter"
    assert mcq["geometry3k-2"].choices == ["6", "8", "10", "12"] and "(D) 12" in mcq["geometry3k-2"].problem


@pytest.mark.parametrize("form", ["disk", "parquet", "r1v_disk", "r1v_parquet"])
def test_geoqa8k_layouts(fixtures, tmp_path, form):
    code, out = prepare("geoqa8k", tmp_path, "--source", fixtures["geoqa8k"][form])
    assert code == 0
    samples = loaded(out).samples
    assert len(samples) == 3 and all(s.answer_type == "integer" for s in samples)
    if form.startswith("r1v"):
        assert sorted(s.answer for s in samples) == ["2", "3", "4"]
        assert samples[0].answer_raw.startswith("<answer>")


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_mmk12(fixtures, tmp_path, form):
    code, out = prepare("mmk12", tmp_path, "--source", fixtures["mmk12"][form])
    assert code == 0
    result = loaded(out)
    by_uid = {s.uid: s for s in result.samples}
    assert by_uid["mmk12-m0"].answer == "B" and by_uid["mmk12-m0"].choices == ["6", "8", "10", "12"]
    assert by_uid["mmk12-m0"].category == "math" and by_uid["mmk12-m1"].answer_type == "float"
    assert result.manifest["counts"]["dropped"] == {"missing_answer": 1}


def test_mmk12_refuses_test_split(fixtures, tmp_path, capsys):
    code, _ = prepare("mmk12", tmp_path, "--source", fixtures["mmk12"]["parquet"], "--split", "test")
    assert code == 2 and "--allow-test" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["disk", "parquet", "math_disk", "math_parquet"])
def test_clevr(fixtures, tmp_path, form):
    code, out = prepare("clevr_count", tmp_path, "--source", fixtures["clevr"][form])
    assert code == 0
    samples = loaded(out).samples
    assert len(samples) == 3 and all(s.answer_type == "integer" for s in samples)
    expected = ["1", "2", "3"] if form.startswith("math") else ["3", "4", "5"]
    assert sorted(s.answer for s in samples) == expected


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_thinklite_binary_images(fixtures, tmp_path, form):
    code, out = prepare("thinklite_vl", tmp_path, "--source", fixtures["thinklite"][form])
    assert code == 0
    samples = loaded(out).samples
    assert len(samples) == 3 and samples[0].difficulty == {"thinklite_hard": 1.0}  # "hard" in the source name
    assert samples[0].answer == "A" and samples[0].choices == ["cat", "dog"]


def test_spark_data_messages_and_image_remap(fixtures, tmp_path):
    spark = fixtures["spark"]
    code, out = prepare("spark_data", tmp_path, "--source", spark["json"], "--image-root", spark["image_root"])
    assert code == 0
    result = loaded(out)
    assert len(result.samples) == 3
    s = result.samples[0]
    assert s.problem == "<image>\nWhat is x in figure 0?" and s.answer == "10"
    assert s.meta["suffix"] == builders.SPARK_SUFFIX and s.meta["max_pixels"] == 1048576
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"malformed_row": 1} and "not JSON" in report["issues"][0]["reason"]
    assert result.manifest["licence"] == "CC-BY-NC-4.0"


def test_spark_data_eval_file_needs_flag(fixtures, tmp_path, capsys):
    code, _ = prepare("spark_data", tmp_path, "--source", fixtures["spark"]["eval"])
    assert code == 2 and "evaluation" in capsys.readouterr().err


def test_mathv360k_json_and_subset(fixtures, tmp_path):
    mv = fixtures["mathv"]
    code, out = prepare("mathv360k", tmp_path, "--source", mv["json"], "--image-root", mv["image_root"])
    assert code == 0
    result = loaded(out)
    by_uid = {s.uid: s for s in result.samples}
    assert by_uid["mathv360k-mv0"].answer == "B" and by_uid["mathv360k-mv0"].choices == ["30", "60"]
    assert "Hint" not in by_uid["mathv360k-mv0"].problem and by_uid["mathv360k-mv0"].problem.startswith("<image>")
    assert by_uid["mathv360k-mv1"].answer == "12" and by_uid["mathv360k-mv3"].answer == "Yes"
    assert result.manifest["counts"]["dropped"] == {"no_short_answer": 1}
    code, out = prepare("mathv360k", tmp_path, "--source", mv["json"], "--image-root", mv["image_root"],
                        "--subset", "geoqa+")
    result = loaded(out)
    assert sorted(s.uid for s in result.samples) == ["mathv360k-mv0", "mathv360k-mv1"]
    assert result.manifest["counts"]["rows_not_selected"] == 2


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_mathv360k_llava_onevision_subset(fixtures, tmp_path, form):
    code, out = prepare("mathv360k", tmp_path, "--source", fixtures["mathv"][form])
    assert code == 0
    samples = loaded(out).samples
    assert sorted(s.answer for s in samples) == ["4", "5"]


def test_generic_column_flags(fixtures, tmp_path):
    code, out = prepare("generic", tmp_path, "--source", fixtures["generic"], "--problem-key", "question",
                        "--answer-key", "label", "--image-key", "image", "--id-key", "qid", "--category-key",
                        "topic", "--licence", "CC-BY-4.0", "--images", "embed")
    assert code == 0
    result = loaded(out)
    assert [s.answer for s in result.samples] == ["0", "1", "2"] and result.samples[0].category == "algebra"
    assert result.manifest["licence"] == "CC-BY-4.0" and result.manifest["images"]["storage"] == "embed"
    assert result.manifest["counts"]["dropped"] == {"missing_image": 1}
    assert not (out / "images").exists()


def test_missing_columns_fail_at_once(fixtures, tmp_path, capsys):
    code, out = prepare("geometry3k", tmp_path, "--source", fixtures["mmk12"]["parquet"])
    err = capsys.readouterr().err
    assert code == 2 and "has columns" in err and "question" in err and "images, problem, answer" in err
    assert not (out / "manifest.json").exists()


def test_missing_source_fails(tmp_path, capsys):
    code, _ = prepare("virl39k", tmp_path, "--source", str(tmp_path / "nope.parquet"))
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_strict_fails_and_writes_no_manifest(fixtures, tmp_path):
    code, out = prepare("virl39k", tmp_path, "--source", fixtures["virl39k"]["parquet"], "--strict")
    assert code == 1
    assert (out / "report.json").exists() and not (out / "manifest.json").exists()


def test_script_entry_point(fixtures, tmp_path):
    out = tmp_path / "script_out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_recipes/clevr_count.py"), "--source", fixtures["clevr"]["parquet"],
         "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == 3 and "clevr_count.py --source" in manifest["command"]


@pytest.mark.parametrize("form", ["disk", "parquet"])
def test_generic_on_hf_forms(tmp_path, form):
    from datasets import Features, Image, List, Value

    rows = [{"uid": f"h{i}", "prompt": f"<image>Count the dots ({i}).", "ground_truth": f"\\boxed{{{i + 1}}}",
             "pictures": [builders.png(builders.COLOURS[i], mark=i)]} for i in range(3)]
    feats = Features({"uid": Value("string"), "prompt": Value("string"), "ground_truth": Value("string"),
                      "pictures": List(Image())})
    forms = builders.hf_forms(rows, feats, tmp_path, "generic_hf")
    code, out = prepare("generic", tmp_path, "--source", forms[form], "--problem-key", "prompt", "--answer-key",
                        "ground_truth", "--image-key", "pictures", "--id-key", "uid", "--name", "dots")
    assert code == 0
    samples = loaded(out).samples
    assert [(s.uid, s.answer) for s in samples] == [("dots-h0", "1"), ("dots-h1", "2"), ("dots-h2", "3")]


def test_synthetic_recipe_through_the_cli(tmp_path):
    from spark_vl.cli import main as spark_vl

    out = tmp_path / "procedural"
    assert spark_vl(["data", "prepare", "synthetic", "--out", str(out), "--size", "20", "--tasks",
                     "triangle_angle,bar_chart", "--image-size", "128", "--images", "embed"]) == 0
    result = loaded(out)
    assert len(result.samples) == 20 and result.manifest["recipe"] == "synthetic"
    assert {s.category for s in result.samples} == {"triangle_angle", "bar_chart"}
    assert all(s.solution.endswith(f"\\boxed{{{s.answer}}}") for s in result.samples)
    assert result.manifest["command"].startswith("spark-vl data prepare synthetic")
