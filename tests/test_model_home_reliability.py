"""The model home keeps its promises when things go wrong: a damaged version or pointer is named in
one line and never taken for "no model yet", promote is the way out and accepts only complete
blessed versions of this home, and two runs publishing at once never share a version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_model_home import _data, fake_export

from odpipe import fingerprint, model_home, storage
from odpipe.cli import main
from odpipe.errors import UserError

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def _home(tmp_path, versions=2):
    home = str(tmp_path / "home")
    for n in range(1, versions + 1):
        model_home.publish(home, fake_export(tmp_path / f"e{n}"), {"mAP": n / 10, "blessed": True},
                           {"data_fingerprint": f"d{n}", "run": f"run-{n}"})
    return home


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip()


def _one_line_error(code, err, *needles):
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# -- item 3, 11: promote accepts only complete, blessed versions of this home ----------------------


def test_promote_refuses_a_path_and_a_version_of_another_home(tmp_path, capsys):
    home = _home(tmp_path)
    other = _home(tmp_path / "other", versions=5)
    before = (tmp_path / "home" / "current.json").read_text()
    rel = os.path.relpath(os.path.join(other, "versions", "0005"), home)
    code, _, err = _cli(capsys, "models", "promote", home, rel)
    _one_line_error(code, err, "is not a version number of this home", "complete versions: 0001, 0002")
    code, _, err = _cli(capsys, "models", "promote", home, "5")
    _one_line_error(code, err, "version 0005 is missing or incomplete")
    assert (tmp_path / "home" / "current.json").read_text() == before


def test_promote_refuses_a_version_without_export_or_not_blessed(tmp_path, capsys):
    home = _home(tmp_path, versions=3)
    v1, v2 = tmp_path / "home" / "versions" / "0001", tmp_path / "home" / "versions" / "0002"
    storage.remove_tree(str(v1 / "export"))
    doc = json.loads((v2 / "version.json").read_text())
    del doc["blessed"]  # a version from before version.json recorded it: its metrics.json says
    (v2 / "version.json").write_text(json.dumps(doc))
    (v2 / "metrics.json").write_text(json.dumps({"mAP": 0.2, "blessed": False}))
    code, _, err = _cli(capsys, "models", "promote", home, "1")
    _one_line_error(code, err, "version 0001 cannot be promoted: no complete export", "complete versions: 0003")
    code, _, err = _cli(capsys, "models", "promote", home, "0002")
    _one_line_error(code, err, "version 0002 cannot be promoted: not blessed")
    assert model_home.read_current(home)["version"] == "0003"
    code, out, _ = _cli(capsys, "models", "list", home)
    lines = out.splitlines()
    assert code == 0 and "blessed" in lines[0]
    assert "0001" in lines[1] and "no complete export" in lines[1] and "skipped" in lines[1]
    assert "not blessed" in lines[2] and lines[3].startswith("* 0003") and " yes " in lines[3]


def test_publish_refuses_an_unfinished_export_and_an_unblessed_model(tmp_path):
    home = _home(tmp_path, versions=1)
    unfinished = fake_export(tmp_path / "unfinished")
    os.remove(os.path.join(unfinished, "export.json"))
    with pytest.raises(UserError, match="export has no export.json"):
        model_home.publish(home, unfinished, {"mAP": 0.9, "blessed": True})
    with pytest.raises(UserError, match=r"did not bless it \(mAP 0.1 < 0.5\)"):
        model_home.publish(home, fake_export(tmp_path / "e"), {"mAP": 0.1, "blessed": False,
                                                                "blessing": {"reasons": ["mAP 0.1 < 0.5"]}})
    assert [v["version"] for v in model_home.list_versions(home)] == ["0001"]  # nothing claimed


# -- item 4: a damaged version.json blocks nothing -------------------------------------------------


@pytest.mark.parametrize("content", ["", '{"version": "0001", "mA', '["0001"]'])
def test_a_damaged_version_is_listed_and_skipped_and_publishing_goes_on(tmp_path, capsys, content):
    home = _home(tmp_path)
    (tmp_path / "home" / "versions" / "0001" / "version.json").write_text(content)
    code, out, err = _cli(capsys, "models", "list", home)
    assert code == 0 and err == ""
    assert "0001" in out.splitlines()[1] and "damaged version.json" in out and out.splitlines()[2].startswith("* 0002")
    ann, img = _data(tmp_path)
    assert fingerprint.plan(ann, img, home)["champion"].version == "0002"
    published = model_home.publish(home, fake_export(tmp_path / "e3"), {"mAP": 0.3, "blessed": True})
    assert published["version"] == "0003" and model_home.champion(home)["version"] == "0003"


# -- items 5, 6: a damaged pointer is named, never "no model yet"; promote is the way out -----------


@pytest.mark.parametrize("content, problem", [
    ("", "not valid JSON"),
    ('{"version": "00', "not valid JSON"),
    ("null", "holds JSON null, not an object"),
    ('["0002"]', "not an object"),
    ('{"version": 2}', '"version" is 2, not a version name such as "0002"'),
    ('{"version": null}', 'has no "version"'),
    ('{"version": "9999"}', 'names version "9999", which this home does not have'),
    ('{"version": "2"}', 'names version "2", which this home does not have'),
    ('{"version": "../../other/versions/0005"}', "which this home does not have"),
    ('{"version": "0001", "deleted": true}', 'names version "0001", which this home does not have'),
])
def test_a_damaged_current_json_is_an_error_and_promote_repairs_it(tmp_path, capsys, content, problem):
    home = _home(tmp_path)
    if "deleted" in content:
        storage.remove_tree(str(tmp_path / "home" / "versions" / "0001"))
    (tmp_path / "home" / "current.json").write_text(content)
    code, out, err = _cli(capsys, "models", "list", home)
    _one_line_error(code, err, "current.json", problem, "odpipe models promote")
    assert "0002" in out  # the table is still shown, so the versions to promote are on screen
    with pytest.raises(UserError, match="current.json"):
        model_home.champion(home)  # never None: a damaged pointer is not an empty home
    ann, img = _data(tmp_path)
    with pytest.raises(UserError, match="current.json"):
        fingerprint.plan(ann, img, home)
    with pytest.raises(UserError, match="current.json"):
        model_home.publish(home, fake_export(tmp_path / "e3"), {"mAP": 0.3, "blessed": True})
    code, out, err = _cli(capsys, "models", "promote", home, "2")
    assert code == 0 and "version 0002 is current" in out, err
    assert model_home.champion(home)["version"] == "0002"
    assert "promoted (was" in model_home.read_current(home)["reason"]


def test_current_json_naming_an_incomplete_version_is_named(tmp_path, capsys):
    home = _home(tmp_path)
    os.remove(tmp_path / "home" / "versions" / "0001" / "version.json")
    (tmp_path / "home" / "current.json").write_text('{"version": "0001"}')
    code, _, err = _cli(capsys, "models", "list", home)
    _one_line_error(code, err, "names version 0001, which cannot serve: incomplete publish")


def test_a_home_without_current_json_is_a_new_home(tmp_path, capsys):
    home = _home(tmp_path)
    os.remove(tmp_path / "home" / "current.json")  # e.g. the first publish was killed before it
    assert model_home.champion(home) is None
    code, out, _ = _cli(capsys, "models", "list", home)
    assert code == 0 and "no version is in service yet" in out


# -- item 16: no temp file of a killed publish lingers ---------------------------------------------


def test_a_publish_killed_at_current_json_leaves_no_temp_file(tmp_path):
    home = _home(tmp_path, versions=1)
    export = fake_export(tmp_path / "killed")
    script = ("import os, sys\nfrom odpipe import model_home\n"
              "os.replace = lambda *a: os._exit(9)  # killed between the temp file and its rename\n"
              "model_home.publish(sys.argv[1], sys.argv[2], {'mAP': 0.5, 'blessed': True})\n")
    proc = subprocess.Popen([sys.executable, "-c", script, home, export], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.wait(timeout=120) == 9
    assert [n for n in os.listdir(tmp_path / "home") if n.endswith(".tmp")] == [f".current.json.{proc.pid}.tmp"]
    assert model_home.read_current(home)["version"] == "0001"
    model_home.publish(home, fake_export(tmp_path / "e3"), {"mAP": 0.3, "blessed": True})
    assert sorted(os.listdir(tmp_path / "home")) == ["current.json", "versions"]


# -- check_writable -------------------------------------------------------------------------------


def test_check_writable(tmp_path, gcs_bucket):
    home = str(tmp_path / "home")
    model_home.check_writable(home)
    assert os.listdir(home) == []  # the probe is removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"file/home: cannot write to the model home .*check the path"):
        model_home.check_writable(str(tmp_path / "file" / "home"))
    model_home.check_writable(f"{gcs_bucket}/writable-home")
    assert storage.list_files(f"{gcs_bucket}/writable-home") == []
    with pytest.raises(UserError, match="gs://no-such-bucket-odpipe/home: cannot write to the model home"):
        model_home.check_writable("gs://no-such-bucket-odpipe/home")


# -- issue 14 item 6: two runs, one model home ----------------------------------------------------

RACER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
home, export, run, barrier, map_value = sys.argv[1:6]
if home.startswith("gs://"):
    import pytest
    from fixture_gcs import _anonymous_beam_clients
    _anonymous_beam_clients(pytest.MonkeyPatch())
from odpipe import model_home, storage

claim = storage.create_exclusive
first = [True]

def racing(path, text):  # both runs have listed the home (same next number): now both claim it
    if first[0]:
        first[0] = False
        open(os.path.join(barrier, run), "w").close()
        deadline = time.time() + 120
        while len(os.listdir(barrier)) < 2 and time.time() < deadline:
            time.sleep(0.005)
    return claim(path, text)

storage.create_exclusive = racing
print(json.dumps(model_home.publish(home, export, {{"mAP": float(map_value), "blessed": True}}, {{"run": run}})))
"""


def _race(home, tmp_path):
    """Two processes publish to `home` at the same moment: both list the home, then meet at a
    barrier, then both claim the same next number; returns their current.json answers."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = RACER.format(tests=TESTS)
    procs = [subprocess.Popen([sys.executable, "-c", script, home, fake_export(tmp_path / f"race-{run}", (run,)),
                               run, str(barrier), value], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for run, value in (("alpha", "0.61"), ("beta", "0.72"))]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _check_race(home, results):
    assert sorted(r["version"] for r in results) == ["0002", "0003"]  # one lost the claim and took the next number
    for result, run, value in zip(results, ("alpha", "beta"), (0.61, 0.72)):
        folder = model_home.version_dir(home, result["version"])
        doc = json.loads(storage.read_text(storage.join(folder, "version.json")))
        claim = json.loads(storage.read_text(storage.join(folder, "claim.json")))
        metrics = json.loads(storage.read_text(storage.join(folder, "metrics.json")))
        label_map = storage.read_text(storage.join(folder, "export", "label_map.pbtxt"))
        assert doc["run"] == claim["run"] == run and doc["claim"] == claim["claim"]  # every file is this run's
        assert metrics["mAP"] == value == doc["mAP"] and f'"{run}"' in label_map
    versions, problem = model_home.inspect_home(home)
    assert problem is None and [v["complete"] for v in versions] == [True, True, True]
    champ = model_home.champion(home)  # current.json names a complete version, whichever run wrote last
    assert champ["version"] in ("0002", "0003") and champ["previous"] == "0001"


def test_two_runs_publishing_at_once_never_share_a_version(tmp_path):
    home = _home(tmp_path, versions=1)
    _check_race(home, _race(home, tmp_path))


def test_two_runs_publishing_at_once_on_gcs(gcs_bucket, tmp_path):
    home = f"{gcs_bucket}/race/{tmp_path.name}/home"
    model_home.publish(home, fake_export(tmp_path / "e1"), {"mAP": 0.1, "blessed": True})
    _check_race(home, _race(home, tmp_path))
