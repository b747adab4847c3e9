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
    from odpipe.errors import UserError
    from odpipe.label_map import read_label_map

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


def test_walk_hidden_suffixes_and_depth(base):
    for rel in ("a.xml", "B.XML", "notes.txt", ".hidden.xml", ".cache/x.xml", "sub/c.xml", "sub/.d.xml", "sub/deeper/e.xml"):
        storage.write_text(storage.join(base, "w", *rel.split("/")), rel)
    everything = storage.walk(storage.join(base, "w"))
    assert everything.files == sorted([".cache/x.xml", ".hidden.xml", "B.XML", "a.xml", "notes.txt", "sub/.d.xml",
                                       "sub/c.xml", "sub/deeper/e.xml"])
    xml = storage.walk(storage.join(base, "w"), skip_hidden=True, suffixes=(".xml",))
    assert xml.files == ["B.XML", "a.xml", "sub/c.xml", "sub/deeper/e.xml"]
    assert xml.hidden == 3  # .hidden.xml, .cache (a folder counts once), sub/.d.xml
    top = storage.walk(storage.join(base, "w"), recursive=False)
    assert top.files == [".hidden.xml", "B.XML", "a.xml", "notes.txt"]
    assert storage.walk(storage.join(base, "nothing-here")).files == []
    assert storage.is_dir(storage.join(base, "w", "sub")) and not storage.is_dir(storage.join(base, "w", "su"))


def test_glob_characters_in_paths_are_literal(base):
    """A path that exists is a path, never a pattern: `photo[1].jpg` is that file, not photo1.jpg."""
    for rel in ("d[v2]/photo[1].jpg", "d[v2]/photo1.jpg", "dv/photo1.jpg", "d[v2]/sub/x.png", "d[v2]/notes.txt"):
        storage.write_text(storage.join(base, *rel.split("/")), rel)
    folder = storage.join(base, "d[v2]")
    assert storage.find(storage.join(folder, "photo[1].jpg")) == ("file", [(storage.join(folder, "photo[1].jpg"), "photo[1].jpg")])
    kind, found = storage.find(folder, suffixes=(".jpg", ".png"))
    assert kind == "folder" and [name for _, name in found] == ["photo1.jpg", "photo[1].jpg", "sub/x.png"]
    kind, found = storage.find(storage.join(base, "d*", "photo?.jpg"))  # not a path: a pattern
    assert kind == "pattern" and [p for p, _ in found] == sorted([storage.join(base, "d[v2]", "photo1.jpg"),
                                                                 storage.join(base, "dv", "photo1.jpg")])
    assert storage.find(storage.join(base, "nope[1].jpg")) == ("missing", [])
    assert storage.glob_after(storage.join(folder, "photo"), "*.jpg") == [storage.join(folder, "photo1.jpg"),
                                                                         storage.join(folder, "photo[1].jpg")]
    assert storage.walk(folder).files == ["notes.txt", "photo1.jpg", "photo[1].jpg", "sub/x.png"]
    storage.remove_tree(folder)
    assert storage.walk(folder).files == [] and storage.walk(storage.join(base, "dv")).files == ["photo1.jpg"]


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        storage.write_text(str(tmp_path / "file" / "sub" / "out.txt"), "y")
    assert info.value.filename == str(tmp_path / "file")


def test_local_listing_is_an_error_when_a_folder_cannot_be_read(tmp_path, monkeypatch):
    import errno
    import os

    (tmp_path / "w" / "locked").mkdir(parents=True)
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(storage.os, "scandir", scandir)
    with pytest.raises(PermissionError) as info:
        storage.walk(str(tmp_path / "w"))
    assert info.value.filename == str(tmp_path / "w" / "locked")


def test_production_code_touches_no_private_beam_name():
    import pathlib

    import odpipe

    root = pathlib.Path(odpipe.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "_Credentials" not in text and "internal.gcp" not in text, path


def test_create_exclusive_lets_one_writer_own_a_name(base):
    """A local exclusive create; on gs:// an upload with if_generation_match=0 (the fixture's emulator
    honours it, as Cloud Storage does): the second create fails and the first content stays."""
    path = storage.join(base, "claims", "0001", "claim.json")
    storage.create_exclusive(path, "first")
    with pytest.raises(FileExistsError):
        storage.create_exclusive(path, "second")
    assert storage.read_text(path) == "first"


def test_the_stock_emulator_ignores_if_generation_match(tmp_path):
    """Why tests/gcs_emulator.py exists: gcp-storage-emulator itself overwrites the object."""
    import subprocess
    import sys

    from fixture_gcs import _free_port, _wait_until_up
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
                             str(port), "--in-memory", "--default-bucket", "stock"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/storage/v1/b", proc)
        client = gcs.Client(project="p", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": f"http://127.0.0.1:{port}"})
        blob = client.bucket("stock").blob("k")
        blob.upload_from_string(b"one", if_generation_match=0)
        blob.upload_from_string(b"two", if_generation_match=0)  # Cloud Storage: 412 PreconditionFailed
        assert blob.download_as_bytes() == b"two"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stat_checksums_follows_the_walker_and_gives_bucket_checksums(base):
    for rel in ("a.xml", "notes.txt", ".DS_Store", "sub/b.XML", ".hidden/c.xml"):
        storage.write_text(storage.join(base, "s", *rel.split("/")), rel)
    found = storage.stat_checksums(storage.join(base, "s"), skip_hidden=True, suffixes=(".xml",))
    assert [(rel, size) for rel, size, _, _ in found] == [("a.xml", 5), ("sub/b.XML", 9)]
    if storage.is_remote(base):
        assert all(checksum.startswith("crc32c:") and len(checksum) > len("crc32c:,md5:") for *_, checksum in found)
        assert found[0][3] != found[1][3]
    else:
        assert all(checksum == "" for *_, checksum in found)


def test_replace_text_removes_the_temp_files_of_dead_writers(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / f".current.json.{dead.pid}.tmp").write_text("{half")  # a publish killed before its rename
    (folder / f".current.json.{os.getppid()}.tmp").write_text("{")  # a live writer, just started: kept
    (folder / f".other.json.{dead.pid}.tmp").write_text("{")  # another file's: not this writer's business
    storage.replace_text(str(folder / "current.json"), "{}\n")
    assert sorted(os.listdir(folder)) == sorted([".other.json.%d.tmp" % dead.pid, f".current.json.{os.getppid()}.tmp",
                                                 "current.json"])
    old = folder / f".current.json.{os.getppid()}.tmp"
    os.utime(old, (0, 0))  # a writer on another machine, long gone
    storage.replace_text(str(folder / "current.json"), "{}\n")
    assert not old.exists()
