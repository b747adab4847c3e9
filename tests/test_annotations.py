"""odpipe csv: labelImg XML -> labels CSV + report (tiny fixtures written by the tests)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from odpipe.annotations import CSV_COLUMNS, read_labels_csv, xml_to_csv
from odpipe.cli import main
from odpipe.errors import UserError
from odpipe.sample_data import voc_xml, write_sample_data


def image(path, size=(40, 30), mode="RGB", fmt=None, exif_orientation=None, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.new(mode, size, 128 if mode == "L" else (200, 100, 50))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    img.save(path, format=fmt, **kwargs)
    return path


def xml(path, filename, objects=(), size=(40, 30), win_path=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = voc_xml(filename, "imgs", win_path or f"C:\\Users\\me\\imgs\\{filename}", size[0], size[1], 3, objects)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def raw(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def convert(tmp_path, **kw):
    out = tmp_path / "labels.csv"
    report = xml_to_csv(str(tmp_path / "ann"), str(out), **kw)
    return report, read_labels_csv(str(out))


def test_float_coords_any_field_order_and_ignored_path(tmp_path):
    image(tmp_path / "ann/a.jpg")
    # fields shuffled, float and exponent coordinates, <path> pointing to another machine
    raw(
        tmp_path / "ann/a.xml",
        """<annotation><object><bndbox><ymax>2.5e1</ymax><xmin>1.5</xmin><xmax>1e1</xmax><ymin>3</ymin></bndbox>
        <difficult>1</difficult><name>dog</name></object>
        <path>D:\\photos\\elsewhere\\a.jpg</path><size><height>30</height><width>40</width></size>
        <filename>a.jpg</filename></annotation>""",
    )
    report, frame = convert(tmp_path)
    assert list(frame.columns) == CSV_COLUMNS
    row = frame.iloc[0]
    assert (row["filename"], row["width"], row["height"], row["class"]) == ("a.jpg", 40, 30, "dog")
    assert (row["xmin"], row["ymin"], row["xmax"], row["ymax"], row["difficult"]) == (1.5, 3.0, 10.0, 25.0, 1)
    assert report["warnings"] == [] and report["dropped"] == []
    text = (tmp_path / "labels.csv").read_text()
    assert "a.jpg,40,30,dog,1.5,3,10,25,1,0" in text  # integers stay integers, floats exact


def test_objectless_nested_extensions_grayscale_png(tmp_path):
    image(tmp_path / "ann/x/UPPER.JPG", size=(64, 48))
    image(tmp_path / "ann/x/y/gray.jpg", size=(33, 21), mode="L", progressive=True)
    image(tmp_path / "ann/x/y/cmyk.jpg", size=(17, 19), mode="CMYK")
    image(tmp_path / "ann/p.png", size=(50, 60), fmt="PNG")
    xml(tmp_path / "ann/x/UPPER.xml", "UPPER.JPG", [("cat", (2, 3, 20, 30))], size=(64, 48))
    xml(tmp_path / "ann/x/y/gray.xml", "gray.jpg", [("cat", (1, 1, 33, 21)), ("dog", (5, 5, 9, 9))], size=(33, 21))
    xml(tmp_path / "ann/p.xml", "p.png", [], size=(50, 60))
    xml(tmp_path / "ann/x/y/cmyk.xml", "cmyk.jpg", [], size=(17, 19))
    report, frame = convert(tmp_path)
    assert report["images"] == 4 and report["empty_images"] == 2 and report["objects"] == 3
    assert report["classes"] == {"cat": 2, "dog": 1}
    # sorted walk, filenames relative to the images root (here the annotations folder)
    assert list(frame["filename"].unique()) == ["p.png", "x/UPPER.JPG", "x/y/cmyk.jpg", "x/y/gray.jpg"]
    empty = frame[frame["filename"] == "p.png"].iloc[0]
    assert empty["class"] == "" and empty[["xmin", "ymin", "xmax", "ymax"]].isna().all()
    assert (empty["width"], empty["height"]) == (50, 60)
    assert report["warnings"] == []


def test_images_dir_subfolder_and_backslash_filename(tmp_path):
    image(tmp_path / "images/sub/a.jpg")
    image(tmp_path / "images/b.jpg")
    image(tmp_path / "images/win/c.JPG")
    xml(tmp_path / "ann/sub/a.xml", "a.jpg", [("x", (1, 1, 5, 5))])  # mirrored sub-folder
    xml(tmp_path / "ann/sub/b.xml", "b.jpg", [("x", (1, 1, 5, 5))])  # flat images folder
    xml(tmp_path / "ann/c.xml", "win\\c.JPG", [("x", (1, 1, 5, 5))])  # Windows relative path
    report, frame = convert(tmp_path, images_dir=str(tmp_path / "images"))
    assert sorted(frame["filename"]) == ["b.jpg", "sub/a.jpg", "win/c.JPG"]
    assert report["warnings"] == []


def test_fallbacks_warn_stem_and_letter_case(tmp_path):
    image(tmp_path / "ann/photo1.JPG")
    image(tmp_path / "ann/photo2.jpeg")
    image(tmp_path / "ann/0003_cam.png", fmt="PNG")
    xml(tmp_path / "ann/photo1.xml", "photo1.jpg", [("x", (1, 1, 5, 5))])  # other letter case
    xml(tmp_path / "ann/photo2.xml", "renamed.jpg", [("x", (1, 1, 5, 5))])  # stem fallback
    xml(tmp_path / "ann/photo3.xml", "0003_cam", [("x", (1, 1, 5, 5))])  # <filename> without extension
    report, frame = convert(tmp_path, images_dir="")  # "" (unset pipeline parameter) = not given
    assert sorted(frame["filename"]) == ["0003_cam.png", "photo1.JPG", "photo2.jpeg"]
    messages = " | ".join(w["message"] for w in report["warnings"])
    assert "other letter case" in messages and "the image with the XML's name" in messages
    assert "no image extension" in messages
    assert len(report["warnings"]) == 3


def test_missing_image_dropped_and_counted(tmp_path):
    image(tmp_path / "ann/ok.jpg")
    xml(tmp_path / "ann/ok.xml", "ok.jpg", [("a", (1, 1, 5, 5))])
    xml(tmp_path / "ann/gone.xml", "gone.jpg", [("a", (1, 1, 5, 5)), ("b", (2, 2, 6, 6))])
    raw(tmp_path / "ann/broken.jpg", "not an image")
    xml(tmp_path / "ann/broken.xml", "broken.jpg", [("a", (1, 1, 5, 5))])
    report, frame = convert(tmp_path)
    assert report["images"] == 1 and report["objects"] == 1 and report["objects_in_xml"] == 4
    assert [d["file"] for d in report["dropped_images"]] == ["broken.xml", "gone.xml"]
    assert "not found" in report["dropped_images"][1]["reason"]
    assert "not a readable image" in report["dropped_images"][0]["reason"]
    assert sorted(d["class"] for d in report["dropped"]) == ["a", "a", "b"]
    assert report["objects"] + len(report["dropped"]) == report["objects_in_xml"]
    assert list(frame["filename"]) == ["ok.jpg"]


def test_clipping_and_drops_with_reasons(tmp_path):
    image(tmp_path / "ann/a.jpg", size=(40, 30))
    objects = [
        ("inside", (1, 1, 40, 30)),
        ("offbyone", (0, 0, 41, 31)),  # clipped silently (<= 1 px), counted
        ("far", (-10, 5, 60, 20)),  # clipped with a warning
        ("outside", (50, 5, 70, 20)),  # zero area after clipping
        ("inverted", (20, 5, 10, 20)),
        ("flat", (5, 5, 5, 20)),
        ("", (1, 1, 5, 5)),
        ("inside", (1, 1, 40, 30)),  # the same box twice
        ("other", (1, 1, 40, 30)),  # same box, other class: kept
    ]
    xml(tmp_path / "ann/a.xml", "a.jpg", objects)
    report, frame = convert(tmp_path)
    assert list(frame["class"]) == ["inside", "offbyone", "far", "other"]
    assert frame[["xmin", "ymin", "xmax", "ymax"]].values.tolist() == [[1, 1, 40, 30], [0, 0, 40, 30], [0, 5, 40, 20], [1, 1, 40, 30]]
    reasons = {d["class"]: d["reason"] for d in report["dropped"]}
    assert reasons.keys() == {"outside", "inverted", "flat", "", "inside"}
    assert "duplicate box" in reasons["inside"]
    assert "zero area" in reasons["outside"] and "inverted" in reasons["inverted"] and "zero area" in reasons["flat"]
    assert "empty <name>" in reasons[""]
    assert report["clipped_boxes"] == 2
    assert len(report["warnings"]) == 1 and "'far'" in report["warnings"][0]["message"]
    assert report["objects"] + len(report["dropped"]) == report["objects_in_xml"] == 9


def test_bad_numbers_missing_bndbox_and_all_dropped_image(tmp_path):
    image(tmp_path / "ann/a.jpg")
    raw(
        tmp_path / "ann/a.xml",
        "<annotation><filename>a.jpg</filename>"
        "<object><name>n</name><bndbox><xmin>abc</xmin><ymin>1</ymin><xmax>nan</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>m</name></object></annotation>",
    )
    image(tmp_path / "ann/b.jpg")
    xml(tmp_path / "ann/b.xml", "b.jpg", [("k", (1, 1, 5, 5))])
    report, frame = convert(tmp_path)
    reasons = [d["reason"] for d in report["dropped"]]
    assert "xmin='abc'" in reasons[0] and "xmax='nan'" in reasons[0] and "no <bndbox>" in reasons[1]
    # an image whose every object was dropped is not kept as a background image
    assert report["dropped_images"][0]["file"] == "a.xml" and "all 2 objects" in report["dropped_images"][0]["reason"]
    assert list(frame["filename"]) == ["b.jpg"] and report["empty_images"] == 0


def test_size_disagreement_and_exif_orientation(tmp_path):
    image(tmp_path / "ann/resized.jpg", size=(40, 30))
    xml(tmp_path / "ann/resized.xml", "resized.jpg", [("a", (1, 1, 5, 5))], size=(80, 60))
    image(tmp_path / "ann/phone.jpg", size=(40, 30), exif_orientation=6)
    xml(tmp_path / "ann/phone.xml", "phone.jpg", [("a", (1, 1, 5, 5))], size=(30, 40))  # labelled rotated
    image(tmp_path / "ann/tagged.jpg", size=(40, 30), exif_orientation=3)
    xml(tmp_path / "ann/tagged.xml", "tagged.jpg", [("a", (1, 1, 5, 5))], size=(40, 30))
    report, frame = convert(tmp_path)
    # the stored size is used everywhere
    assert set(zip(frame["width"], frame["height"])) == {(40, 30)}
    w = {x["file"]: x["message"] for x in report["warnings"]}
    assert "80x60" in w["resized.xml"] and "40x30" in w["resized.xml"]
    assert "EXIF orientation 6" in w["phone.xml"] and "rotated" in w["phone.xml"]
    assert "EXIF orientation 3" in w["tagged.xml"] and "stored pixels" in w["tagged.xml"]


def test_duplicate_xml_for_one_image_first_wins(tmp_path):
    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))])
    xml(tmp_path / "ann/a_copy.xml", "a.jpg", [("a", (1, 1, 5, 5)), ("b", (2, 2, 8, 8))])
    report, frame = convert(tmp_path)
    assert len(frame) == 1 and report["objects"] == 1
    assert len(report["dropped"]) == 2 and all("duplicate annotation" in d["reason"] for d in report["dropped"])
    assert report["warnings"][0]["file"] == "a_copy.xml"


def test_hidden_files_skipped_and_counted(tmp_path):
    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [])
    raw(tmp_path / "ann/._a.xml", "\x00\x05binary resource fork")
    report, _ = convert(tmp_path)
    assert report["hidden_files_skipped"] == 1 and report["xml_files"] == 1


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>a.jpg</filename><object><name>&lol3;</name></object></annotation>"""
XXE = """<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<annotation><filename>&x;</filename></annotation>"""


@pytest.mark.parametrize("text", [BOMB, XXE], ids=["entity-expansion", "external-entity"])
def test_entity_attacks_refused(tmp_path, text):
    image(tmp_path / "ann/a.jpg")
    raw(tmp_path / "ann/evil.xml", text)
    with pytest.raises(UserError, match=r"evil\.xml: refused, the XML declares entities"):
        convert(tmp_path)


@pytest.mark.parametrize(
    "name",
    ["../secret.jpg", "sub/../../secret.jpg", "/etc/passwd", "C:\\Users\\me\\a.jpg", "C:/a.jpg", "\\\\server\\share\\a.jpg", "..\\a.jpg"],
)
def test_path_traversal_refused(tmp_path, name):
    image(tmp_path / "secret.jpg")
    xml(tmp_path / "ann/a.xml", name, [("a", (1, 1, 5, 5))])
    with pytest.raises(UserError, match=r"a\.xml: <filename> .* (absolute path|climbs out)"):
        convert(tmp_path)


def test_malformed_and_foreign_xml_are_errors(tmp_path):
    raw(tmp_path / "ann/bad.xml", "<annotation><filename>a.jpg</annotation>")
    with pytest.raises(UserError, match=r"bad\.xml: not well-formed XML"):
        convert(tmp_path)
    raw(tmp_path / "ann/bad.xml", "<config><x/></config>")
    with pytest.raises(UserError, match=r"bad\.xml: root element is <config>"):
        convert(tmp_path)


def test_no_xml_or_missing_folder(tmp_path):
    (tmp_path / "ann").mkdir()
    with pytest.raises(UserError, match="no .xml files"):
        convert(tmp_path)
    with pytest.raises(UserError, match="annotations folder not found"):
        xml_to_csv(str(tmp_path / "nope"), str(tmp_path / "o.csv"))


def test_strict_turns_warnings_and_drops_into_errors(tmp_path):
    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))])
    report, _ = convert(tmp_path, strict=True)  # a clean folder passes
    assert report["warnings"] == []
    xml(tmp_path / "ann/b.xml", "b.jpg", [("a", (1, 1, 5, 5))])  # missing image
    os.remove(tmp_path / "labels.csv")
    report_path = tmp_path / "report.json"
    with pytest.raises(UserError, match=r"b\.xml: image dropped.*--strict"):
        convert(tmp_path, strict=True, report_path=str(report_path))
    assert not (tmp_path / "labels.csv").exists()
    assert json.loads(report_path.read_text())["dropped_images"][0]["file"] == "b.xml"  # report still written
    os.remove(tmp_path / "ann/b.xml")
    image(tmp_path / "ann/c.jpg", size=(40, 30))
    xml(tmp_path / "ann/c.xml", "c.jpg", [("a", (1, 1, 5, 5))], size=(41, 30))  # a warning only
    with pytest.raises(UserError, match=r"c\.xml: <size> says 41x30"):
        convert(tmp_path, strict=True)


def test_sample_data_report_arithmetic_and_cli(tmp_path, capsys):
    write_sample_data(str(tmp_path), images=12, seed=3)
    xml_dir = tmp_path / "annotations"
    # spice it up: one missing image, one box outside
    xml(xml_dir / "zz_missing.xml", "zz_missing.jpg", [("circle", (1, 1, 9, 9))])
    out, rep = tmp_path / "labels.csv", tmp_path / "report.json"
    rc = main(["csv", str(xml_dir), "-o", str(out), "--images-dir", str(tmp_path / "images"), "--report", str(rep)])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.loads(rep.read_text())
    frame = read_labels_csv(str(out))
    assert f"read 13 XML files: {report['images']} images" in printed and "dropped 1 of" in printed
    assert report["images"] == 12 == frame["filename"].nunique()
    assert report["objects"] == int((frame["class"] != "").sum()) == sum(report["classes"].values())
    assert report["empty_images"] == int(frame.groupby("filename")["class"].apply(lambda c: (c == "").all()).sum())
    assert report["objects"] + len(report["dropped"]) == report["objects_in_xml"]
    assert set(report) >= {"images", "objects", "empty_images", "classes", "dropped", "warnings"}
    rc = main(["csv", str(xml_dir), "-o", str(out), "--images-dir", str(tmp_path / "images"), "--strict"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zz_missing.xml" in err


def test_csv_round_trip_quoting_and_odd_class_names(tmp_path):
    image(tmp_path / "ann/é ü.jpg")
    names = ['say "hi", ok', "NA", "null", "épée 🗡", "  padded  "]
    xml(tmp_path / "ann/é ü.xml", "é ü.jpg", [(n, (1, 1, 5, 5)) for n in names])
    report, frame = convert(tmp_path)
    assert list(frame["class"]) == [n.strip() for n in names]
    assert list(frame["filename"].unique()) == ["é ü.jpg"]


def test_bucket_paths_through_the_emulator(tmp_path, gcs_bucket):
    """gs:// annotations, images, CSV and report (odpipe.storage against the GCS emulator)."""
    import uuid

    from fixture_gcs import upload_dir

    from odpipe import storage
    from odpipe.split import split_csv

    write_sample_data(str(tmp_path / "d"), images=6, seed=2)
    (tmp_path / "d/annotations/sub").mkdir()
    (tmp_path / "d/annotations/sample_00004.xml").rename(tmp_path / "d/annotations/sub/sample_00004.xml")
    (tmp_path / "d/images/sample_00005.jpg").rename(tmp_path / "d/images/sample_00005.JPG")
    prefix = f"{gcs_bucket}/annotations-{uuid.uuid4().hex[:8]}"
    upload_dir(str(tmp_path / "d"), prefix)
    local = xml_to_csv(str(tmp_path / "d/annotations"), str(tmp_path / "l.csv"), images_dir=str(tmp_path / "d/images"))
    remote = xml_to_csv(
        prefix + "/annotations", prefix + "/labels.csv", images_dir=prefix + "/images", report_path=prefix + "/report.json"
    )
    assert storage.read_text(prefix + "/labels.csv") == (tmp_path / "l.csv").read_text()
    assert json.loads(storage.read_text(prefix + "/report.json"))["objects"] == local["objects"] == remote["objects"]
    assert len(remote["warnings"]) == 1 and "other letter case" in remote["warnings"][0]["message"]
    split_csv(str(tmp_path / "l.csv"), str(tmp_path / "split"), eval_fraction=0.3, images_dir=str(tmp_path / "d/images"))
    summary = split_csv(prefix + "/labels.csv", prefix + "/split", eval_fraction=0.3, images_dir=prefix + "/images")
    assert summary["duplicates_by"] == "sha256"
    assert storage.read_text(prefix + "/split/eval.csv") == (tmp_path / "split/eval.csv").read_text()


def test_stem_fallback_finds_tiff_images(tmp_path):
    """labelImg opens TIFF scans and the records stage converts them, so the look-up finds them too."""
    image(tmp_path / "ann/scan4.TIFF", fmt="TIFF")
    xml(tmp_path / "ann/scan4.xml", "scan4", [("x", (1, 1, 5, 5))])  # <filename> without extension
    report, frame = convert(tmp_path)
    assert list(frame["filename"]) == ["scan4.TIFF"] and report["objects"] == 1
    assert "using 'scan4.TIFF'" in report["warnings"][0]["message"]


def test_zero_size_in_xml_means_not_recorded(tmp_path):
    """Some tools write <width>0</width> when they did not record the size: no resize warning."""
    image(tmp_path / "ann/a.jpg", size=(40, 30))
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))], size=(0, 0))
    report, frame = convert(tmp_path, strict=True)
    assert report["warnings"] == [] and (frame["width"].iloc[0], frame["height"].iloc[0]) == (40, 30)


def _deny_listing(monkeypatch, folder):
    """Make listing `folder` fail as it does for a folder without read permission: chmod (enough
    when not root) and, through the walker's own listing call (os.scandir), also as root."""
    import errno

    from odpipe import storage

    real_scandir = os.scandir
    denied = os.path.realpath(folder)

    def scandir(path="."):
        if os.path.realpath(path) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(storage.os, "scandir", scandir)
    os.chmod(folder, 0)


def test_unreadable_subfolder_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))])
    image(tmp_path / "ann/locked/b.jpg")
    xml(tmp_path / "ann/locked/b.xml", "b.jpg", [("b", (1, 1, 5, 5))])
    _deny_listing(monkeypatch, tmp_path / "ann/locked")
    try:
        with pytest.raises(UserError, match=r"ann/locked: cannot read this annotations folder \(Permission denied\).*chmod"):
            convert(tmp_path)
        assert not (tmp_path / "labels.csv").exists()  # nothing written without the folder's files
        assert main(["csv", str(tmp_path / "ann"), "-o", str(tmp_path / "labels.csv")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("odpipe csv: error: ") and "ann/locked" in err
    finally:
        os.chmod(tmp_path / "ann/locked", 0o755)


def test_unreadable_xml_file_is_an_error_naming_it(tmp_path, monkeypatch):
    import errno

    from odpipe import storage

    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))])
    real_open = storage.open_read

    def open_read(path):
        if str(path).endswith("a.xml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(storage, "open_read", open_read)
    with pytest.raises(UserError, match=r"a\.xml: cannot read this annotation file \(Permission denied\)"):
        convert(tmp_path)


def test_symlink_loop_followed_once(tmp_path):
    image(tmp_path / "ann/a.jpg")
    xml(tmp_path / "ann/a.xml", "a.jpg", [("a", (1, 1, 5, 5))])
    image(tmp_path / "ann/sub/b.jpg")
    xml(tmp_path / "ann/sub/b.xml", "b.jpg", [("b", (1, 1, 5, 5))])
    image(tmp_path / "elsewhere/c.jpg")
    xml(tmp_path / "elsewhere/c.xml", "c.jpg", [("c", (1, 1, 5, 5))])
    os.symlink("..", tmp_path / "ann/sub/loop")  # back to ann: a loop
    os.symlink(tmp_path / "ann", tmp_path / "ann/sub/loop2")  # the same loop, absolute
    os.symlink("sub", tmp_path / "ann/a_link_to_sub")  # a second way to a real folder (sorted first)
    os.symlink(tmp_path / "elsewhere", tmp_path / "ann/linked")  # a folder outside, reached once
    os.symlink("gone", tmp_path / "ann/dangling.xml")
    report, frame = convert(tmp_path)
    assert report["xml_files"] == 3 and report["images"] == 3 and report["objects"] == 3
    assert sorted(frame["filename"]) == ["a.jpg", "linked/c.jpg", "sub/b.jpg"]  # real paths win over links
    assert report["dropped"] == [] and report["dropped_images"] == []
    assert report["linked_folders_skipped"] == ["a_link_to_sub", "sub/loop", "sub/loop2"]
    assert [w["file"] for w in report["warnings"]] == ["dangling.xml"]
    assert "broken symbolic link" in report["warnings"][0]["message"]


def test_sample_data_straight_to_a_bucket(tmp_path, gcs_bucket):
    import uuid

    prefix = f"{gcs_bucket}/sample-{uuid.uuid4().hex[:8]}"
    summary = write_sample_data(prefix, images=3, seed=4)
    report = xml_to_csv(f"{prefix}/annotations", str(tmp_path / "l.csv"), images_dir=f"{prefix}/images")
    assert report["images"] == 3 and report["objects"] == summary["objects"] and report["warnings"] == []
