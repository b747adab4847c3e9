"""odpipe labelmap: TF OD API .pbtxt, ids from 1 sorted by name, stable ids with --extend."""

from __future__ import annotations

import pytest

from odpipe.annotations import format_labels_csv
from odpipe.cli import main
from odpipe.errors import UserError
from odpipe.label_map import build_label_map, format_label_map, parse_label_map, read_label_map, write_label_map

ODD_NAMES = ["it's", 'say "hi"', "back\\slash", "two words", "épée", "狗", "🐕 dog", "NA", "new\nline"]


def labels_csv(path, classes, empty=True):
    rows = [[f"img{i}.jpg", 10, 10, c, 1, 1, 5, 5, 0, 0] for i, c in enumerate(classes)]
    if empty:
        rows.append(["bg.jpg", 10, 10, "", None, None, None, None, 0, 0])
    path.write_text(format_labels_csv(rows), encoding="utf-8")
    return str(path)


def string_int_label_map_class():
    """The TF Object Detection API's StringIntLabelMap message, built from its .proto definition."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="odpipe_test_string_int_label_map.proto", package="object_detection.protos")
    fdp.syntax = "proto2"
    F = descriptor_pb2.FieldDescriptorProto
    item = fdp.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    item.field.add(name="display_name", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    top = fdp.message_type.add(name="StringIntLabelMap")
    top.field.add(
        name="item", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".object_detection.protos.StringIntLabelMapItem"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("object_detection.protos.StringIntLabelMap"))


def test_ids_from_one_sorted_by_name(tmp_path):
    csv = labels_csv(tmp_path / "l.csv", ["zebra", "ant", "mouse", "ant"])
    out = tmp_path / "label_map.pbtxt"
    assert write_label_map(csv, str(out)) == {1: "ant", 2: "mouse", 3: "zebra"}
    text = out.read_text()
    assert text.startswith("item {\n  id: 1\n  name: 'ant'\n  display_name: 'ant'\n}\n")
    assert read_label_map(str(out)) == {1: "ant", 2: "mouse", 3: "zebra"}


def test_extend_keeps_ids_and_appends_new_classes(tmp_path):
    existing = tmp_path / "old.pbtxt"
    existing.write_text(format_label_map({1: "dog", 4: "cat", 7: "zebra"}))
    csv = labels_csv(tmp_path / "l.csv", ["cat", "bird", "aardvark", "dog"])
    out = tmp_path / "new.pbtxt"
    label_map = write_label_map(csv, str(out), extend=str(existing))
    # old ids untouched (zebra kept although absent from the CSV), new classes sorted after id 7
    assert label_map == {1: "dog", 4: "cat", 7: "zebra", 8: "aardvark", 9: "bird"}
    assert read_label_map(str(out)) == label_map
    # extending again with the same data changes nothing
    again = write_label_map(csv, str(tmp_path / "again.pbtxt"), extend=str(out))
    assert again == label_map and (tmp_path / "again.pbtxt").read_text() == out.read_text()


def test_odd_names_round_trip_and_parse_like_tf_od_api(tmp_path):
    from google.protobuf import text_format

    label_map = build_label_map([n for n in ODD_NAMES if "\n" not in n] + ["new\nline"])
    text = format_label_map(label_map)
    assert parse_label_map(text) == label_map
    # what the TF OD API does: text_format.Merge into a StringIntLabelMap
    message = text_format.Merge(text, string_int_label_map_class()())
    assert {item.id: item.name for item in message.item} == label_map
    assert {item.id: item.display_name for item in message.item} == label_map
    # ... and maps the protobuf library writes (double quotes, octal escapes) are read back
    assert parse_label_map(text_format.MessageToString(message)) == label_map
    assert parse_label_map(text_format.MessageToString(message, as_utf8=True)) == label_map


def test_csv_names_round_trip_through_cli(tmp_path, capsys):
    names = [n for n in ODD_NAMES if "\n" not in n]
    csv = labels_csv(tmp_path / "l.csv", names)
    out = tmp_path / "m.pbtxt"
    assert main(["labelmap", csv, "-o", str(out)]) == 0
    assert sorted(read_label_map(str(out)).values()) == sorted(names)
    printed = capsys.readouterr().out
    assert f"{len(names)} classes ({len(names)} new)" in printed and "épée" in printed
    old = tmp_path / "old.pbtxt"
    old.write_text(format_label_map({3: "épée"}))
    assert main(["labelmap", csv, "-o", str(out), "--extend", str(old)]) == 0
    assert read_label_map(str(out))[3] == "épée"
    assert "(new)" in capsys.readouterr().out


def test_parser_accepts_real_world_variants():
    text = """# written by hand
item: {
  name: "person"  # comment
  id: 1,
  display_name: "Person";
}
item { id: 2 display_name: 'only display' frequency: FREQUENT keypoints { id: 0 label: "nose" } }
item {
  id: 3
  name: 'x'
  keypoints: { id: 1 label: 'tail' }
}
"""
    assert parse_label_map(text) == {1: "person", 2: "only display", 3: "x"}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("item { id: 0 name: 'bg' }", "must be >= 1"),
        ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "used twice"),
        ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "appears twice"),
        ("item { name: 'a' }", "has no id"),
        ("item { id: x name: 'a' }", "not an integer"),
        ("item { id: 1 ", "not closed"),
        ("", "holds no items"),
        ("items { id: 1 }", "expected 'item {'"),
        ("item { id: 1 name: 'a }", "cannot parse line 1"),
    ],
)
def test_bad_label_maps_are_user_errors(text, problem):
    with pytest.raises(UserError, match=problem):
        parse_label_map(text, source="m.pbtxt")


def test_missing_files_and_empty_csv(tmp_path):
    with pytest.raises(UserError, match="label map not found"):
        read_label_map(str(tmp_path / "nope.pbtxt"))
    csv = labels_csv(tmp_path / "l.csv", [])
    with pytest.raises(UserError, match="no labelled objects"):
        write_label_map(csv, str(tmp_path / "m.pbtxt"))
    assert main(["labelmap", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "m.pbtxt")]) == 2
