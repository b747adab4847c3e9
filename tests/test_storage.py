"""odpipe.storage: the same calls on local paths and on gs:// (a local GCS emulator)."""

from __future__ import annotations

import pytest

from odpipe import storage


@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/storage-test/{tmp_path.name}"


def test_write_read_glob_rename_delete(base):
    a, b = storage.join(base, "d", "a.txt"), storage.join(base, "d", "b.bin")
    storage.write_text(a, "héllo\n")
    storage.write_bytes(b, bytes(range(256)) * 1000)
    assert storage.read_text(a) == "héllo\n"
    assert storage.read_bytes(b) == bytes(range(256)) * 1000
    assert storage.exists(a) and not storage.exists(storage.join(base, "d", "nope"))
    assert storage.size(b) == 256_000 and storage.size(a) == len("héllo\n".encode())
    with pytest.raises(FileNotFoundError):
        storage.size(storage.join(base, "d", "nope"))
    assert storage.glob(storage.join(base, "d", "*.txt")) == [a]
    assert storage.glob(storage.join(base, "d", "*")) == sorted([a, b])
    c = storage.join(base, "d", "c.txt")
    storage.rename([a], [c])
    assert storage.glob(storage.join(base, "d", "*.txt")) == [c]
    storage.delete([b, c])
    assert storage.glob(storage.join(base, "d", "*")) == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(base, "d", "gone.txt"))


def test_labels_csv_and_label_map_from_bucket(gcs_bucket):
    from odpipe.annotations import read_labels_csv
    from odpipe.label_map import read_label_map

    from odpipe.errors import UserError

    uri = f"{gcs_bucket}/storage-test/labels.csv"
    storage.write_text(uri, "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,10,10,NA,1,1,5,5\n")
    frame = read_labels_csv(uri)
    assert list(frame["class"]) == ["NA"] and frame["xmax"].iloc[0] == 5.0
    storage.write_text(f"{gcs_bucket}/storage-test/m.pbtxt", "item { id: 1 name: 'NA' }\n")
    assert read_label_map(f"{gcs_bucket}/storage-test/m.pbtxt") == {1: "NA"}
    with pytest.raises(UserError, match="not found"):
        read_labels_csv(f"{gcs_bucket}/storage-test/missing.csv")


def test_list_files_and_copy_tree(base, tmp_path):
    for rel in ("saved_model/saved_model.pb", "saved_model/variables/v.index", "label_map.pbtxt"):
        storage.write_text(storage.join(base, "src", *rel.split("/")), rel)
    files = storage.list_files(storage.join(base, "src"))
    assert files == ["label_map.pbtxt", "saved_model/saved_model.pb", "saved_model/variables/v.index"]
    for dest in (storage.join(base, "dest"), str(tmp_path / "local-dest")):
        assert storage.copy_tree(storage.join(base, "src") + "/", dest) == 3
        assert storage.list_files(dest) == files
        assert storage.read_text(storage.join(dest, "saved_model", "variables", "v.index")) == "saved_model/variables/v.index"
    assert storage.list_files(storage.join(base, "missing")) == []
