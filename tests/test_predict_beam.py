"""odpipe predict --runner: batch prediction through Beam's RunInference (DirectRunner) gives the
in-process predict's results on the same images: predictions.json, labelImg XML, unreadable list."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from odpipe.errors import UserError


@pytest.fixture(scope="module")
def beam_inputs(sample_dir, tmp_path_factory):
    """A few sample images (one in a subfolder, one grayscale, one TIFF), plus an empty file, a text
    file named .jpg and a truncated JPEG."""
    root = tmp_path_factory.mktemp("beam_in")
    names = sorted(os.listdir(sample_dir / "images"))[:5]
    for name in names[:3]:
        shutil.copy(sample_dir / "images" / name, root / name)
    os.makedirs(root / "sub")
    shutil.copy(sample_dir / "images" / names[3], root / "sub" / names[3])
    Image.open(sample_dir / "images" / names[4]).convert("L").save(root / "gray.jpg")
    Image.open(sample_dir / "images" / names[4]).save(root / "scan.tif")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    data = (sample_dir / "images" / names[0]).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


def _tree(folder) -> dict:
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def test_beam_predict_equals_in_process_predict(export_dir, beam_inputs, tmp_path):
    from odpipe.predict import predict
    from odpipe.predict_beam import predict_beam

    local = predict(str(export_dir), [str(beam_inputs)], str(tmp_path / "local"), threshold=0.0, voc=True,
                    batch_size=4, draw=False, progress=False)
    beam = predict_beam(str(export_dir), [str(beam_inputs)], str(tmp_path / "beam"), threshold=0.0, voc=True,
                        batch_size=4, draw=False, runner="DirectRunner")
    doc_local = json.loads((tmp_path / "local" / "predictions.json").read_text())
    doc_beam = json.loads((tmp_path / "beam" / "predictions.json").read_text())
    assert doc_local["detections"] > 0  # a comparison of real boxes
    by_file = lambda entries: sorted(entries, key=lambda u: u["file"])  # noqa: E731
    assert by_file(doc_beam.pop("unreadable")) == by_file(doc_local.pop("unreadable"))
    assert doc_beam == doc_local  # model, threshold, counts, classes, images_found, every record in input order
    assert {os.path.basename(u["file"]) for u in beam["unreadable"]} == {"empty.jpg", "text.jpg"}
    # a truncated JPEG is repaired by the records stage's rule in both, and says so
    repaired = [r for r in doc_beam["predictions"] if r["filename"].endswith("truncated.jpg")]
    assert len(repaired) == 1 and repaired[0]["image"].startswith("repaired")
    assert (beam["images"], beam["detections"]) == (local["images"], local["detections"]) == (7, doc_beam["detections"])
    xml = _tree(tmp_path / "beam" / "annotations")
    assert xml == _tree(tmp_path / "local" / "annotations") and len(xml) == 7
    assert any(name.startswith("sub/") for name in xml)
    assert not [p for p in _tree(tmp_path / "beam") if p.endswith(".tmp")]  # atomic writes leave no temp files


def test_beam_options_need_a_runner_and_dataflow_needs_gcs(export_dir, beam_inputs, tmp_path, capsys):
    from odpipe.cli import main
    from odpipe.predict_beam import predict_beam

    assert main(["predict", "--model", str(export_dir), str(beam_inputs), "-o", str(tmp_path / "o"),
                 "--project", "p"]) == 2
    assert "Beam options need --runner" in capsys.readouterr().err
    with pytest.raises(UserError, match="needs --project, --region, --temp_location"):
        predict_beam(str(export_dir), [str(beam_inputs)], str(tmp_path / "o"), runner="DataflowRunner")
    with pytest.raises(UserError, match="use a gs:// folder"):
        predict_beam(str(export_dir), [str(beam_inputs)], str(tmp_path / "o"), runner="DataflowRunner",
                     beam_args=["--project=p", "--region=r", "--temp_location=gs://b/tmp"])
    with pytest.raises(UserError, match="no saved_model/"):
        predict_beam(str(tmp_path), [str(beam_inputs)], str(tmp_path / "o"))


def test_beam_predict_reads_and_writes_gcs(export_dir, beam_inputs, gcs_bucket, tmp_path):
    """Dataflow's shape on the emulator: the export, the images and the outputs all on gs://; the
    workers copy the export, write each XML to the bucket, and predictions.json matches a local run."""
    from fixture_gcs import upload_dir

    from odpipe import storage
    from odpipe.predict import predict
    from odpipe.predict_beam import predict_beam

    upload_dir(str(export_dir), f"{gcs_bucket}/beam-export")
    upload_dir(str(beam_inputs / "sub"), f"{gcs_bucket}/beam-in")
    out = f"{gcs_bucket}/beam-out"
    summary = predict_beam(f"{gcs_bucket}/beam-export", [f"{gcs_bucket}/beam-in"], out, threshold=0.0, voc=True,
                           draw=False, beam_args=["--direct_running_mode=in_memory"])
    local = predict(str(export_dir), [str(beam_inputs / "sub")], str(tmp_path / "local"), threshold=0.0, voc=True,
                    draw=False, progress=False)
    assert summary["images"] == local["images"] == 1 and not summary["unreadable"]
    remote_doc = json.loads(storage.read_text(f"{out}/predictions.json"))
    local_doc = json.loads((tmp_path / "local" / "predictions.json").read_text())
    assert [p["detections"] for p in remote_doc["predictions"]] == [p["detections"] for p in local_doc["predictions"]]
    name = remote_doc["predictions"][0]["output"]
    assert storage.exists(f"{out}/annotations/{name}.xml") and storage.list_files(f"{out}/annotations") == [f"{name}.xml"]
