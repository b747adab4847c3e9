"""labelImg (Pascal VOC XML) annotations -> one labels CSV (+ a report of everything dropped).

CSV columns, in order: filename,width,height,class,xmin,ymin,xmax,ymax,difficult,truncated.
`filename` is the image path relative to the images folder (`--images-dir`, or the annotations
folder when that is not given), with `/` separators; an image with no objects is one row with
empty class and box fields. The first eight columns are the classic generate_csv.py format, so
CSVs written by those scripts (without difficult/truncated) are read too.

Conventions (the records stage relies on them):

* Coordinates. `xmin,ymin,xmax,ymax` are pixel-edge coordinates in the frame of the image's
  *stored* pixels: x runs from 0 (left edge of the first column) to `width` (right edge of the
  last column), y likewise to `height`; the normalised box is simply `xmin / width` etc. The XML
  values are copied unchanged (floats kept, nothing subtracted) and then clipped to
  [0, width] x [0, height]. labelImg writes Qt scene coordinates truncated to int, with xmin/ymin
  raised to at least 1 (its "1-based" look is that clamp, not the VOC devkit's 1-based inclusive
  convention); the TF Object Detection API's create_pascal_tf_record.py and the seed's
  generate_csv.py also use the values as is, so CSVs and records stay compatible with both.
* EXIF orientation. labelImg shows images with Qt's QImage, which does not apply the EXIF
  orientation tag (labelImg issues #198, #342, #376, #395: phone photos show rotated and the
  boxes are drawn on the stored pixels). So width/height are the stored size from the image header
  (no pixel is decoded), boxes are taken on the stored pixels, and the records stage must decode
  without EXIF transposition (tf.io.decode_image does not transpose). An image with an orientation
  tag other than 1 is reported as a warning; one whose XML <size> matches the *rotated* size is
  reported specially (it was probably labelled in a tool that did rotate).
* <filename>. Read by tag name; <path> is ignored (often another machine's path). A backslash is
  taken as a path separator (Windows tools write `sub\\img.JPG`; `\\` cannot occur in a Windows
  file name), so `sub\\img.JPG` means `sub/img.JPG`. Absolute names (`/x`, `C:\\x`, `\\\\server`)
  and names with a `..` part are refused (UserError): they would escape the images folder.
  The image is looked up in `IMAGES_DIR/<the XML's sub-folder>/` then `IMAGES_DIR/` (with
  `--images-dir`), or in the XML's own folder (without it); an exact name first, then the same name
  in another letter case (annotations made on Windows), then an image with the XML's stem and any of
  .jpg .jpeg .png .bmp .gif .webp .tif .tiff (any case) -- each fallback with a warning. No image: the image
  and its objects are dropped and reported.
* Drops. Objects with an empty <name>, no <bndbox>, a non-numeric coordinate, a box that is
  inverted or has zero area after clipping, or the exact same class and box as an earlier object
  of the image (a double click in labelImg) are dropped with the reason. An image whose objects were
  all dropped is dropped too (kept as an object-less image it would teach "nothing here").
  Boxes clipped by more than one pixel are warned about; smaller clips are only counted.
* Duplicates. Two XML files naming the same image: the first in sorted order wins, the later
  file's objects are dropped with reason "duplicate annotation" (merging would double the boxes of
  the usual copied file). Byte-identical images under different names are the split's business.
* Folders. Walked by `storage.walk`: each real folder once (a folder reached again through a
  symbolic link, e.g. a loop, is listed in the report's `linked_folders_skipped`; a link leading
  nowhere is a warning); a folder or XML file that cannot be read is an error naming it.
  Hidden files and folders (names starting with ".", e.g. macOS `._img.xml`) are skipped and
  counted. A malformed XML file, or one whose root is not <annotation>, is an error; so is any XML
  with entity declarations (entity expansion / external entities are refused, not expanded).

`objects` (written) + len(`dropped`) == `objects_in_xml` always holds in the report.
Reading one XML file (parsing, the image look-up, the box checks) is odpipe/voc.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

import pandas as pd

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.progress import progress_bar
from odpipe.schema import CSV_BOX as _BOX
from odpipe.schema import CSV_COLUMNS, read_labels
from odpipe.voc import IMAGE_EXTENSIONS, Conversion, format_number

__all__ = ["CSV_COLUMNS", "IMAGE_EXTENSIONS", "format_labels_csv", "format_number", "read_labels_csv", "write_labels_csv", "xml_to_csv"]


def read_labels_csv(path: str) -> pd.DataFrame:
    """Read a labels CSV (local or `gs://`) with the right types: `odpipe.schema.read_labels` (the one
    reader of the CSV contract) as a DataFrame with columns CSV_COLUMNS."""
    columns = read_labels(path)
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype=_DTYPES.get(name, object)) for name in CSV_COLUMNS})
    return frame


_DTYPES = {"width": "int64", "height": "int64", "difficult": "int64", "truncated": "int64",
           **{name: "float64" for name in _BOX}}


def format_labels_csv(rows) -> str:
    """CSV text for rows of the CSV_COLUMNS values (dicts or sequences), quoting as needed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [row[c] for c in CSV_COLUMNS] if isinstance(row, dict) else list(row)
        text = []
        for col, value in zip(CSV_COLUMNS, values):
            if col in _BOX:
                text.append(format_number(value))
            elif col in ("width", "height", "difficult", "truncated"):
                text.append(str(int(value)))
            else:
                text.append("" if value is None else str(value))
        writer.writerow(text)
    return out.getvalue()


def write_labels_csv(frame: pd.DataFrame, path: str) -> None:
    """Write a frame with CSV_COLUMNS (as read by `read_labels_csv`) in the same CSV format."""
    rows = frame[CSV_COLUMNS].itertuples(index=False, name=None)
    storage.write_text(path, format_labels_csv(rows))


def _list_xml(annotations_dir: str) -> storage.Walk:
    """The .xml files under a folder, walked once per real folder (hidden ones skipped, counted).

    A sub-folder that cannot be read is an error naming it: its files would otherwise be missing
    from the CSV and from the report."""
    if not storage.is_dir(annotations_dir):
        raise UserError(f"{annotations_dir}: annotations folder not found; pass the folder labelImg saved its .xml files to")
    try:
        return storage.walk(annotations_dir, skip_hidden=True, suffixes=(".xml",))
    except OSError as err:
        where = err.filename or annotations_dir
        raise UserError(
            f"{where}: cannot read this annotations folder ({err.strerror or first_line(err)}), so its .xml files "
            "would be left out; fix its permissions (e.g. chmod -R u+rX) or move it out of the annotations folder"
        ) from None


def xml_to_csv(
    annotations_dir: str,
    output_csv: str,
    images_dir: str | None = None,
    report_path: str | None = None,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """Convert a folder of labelImg XML files (searched recursively) into one labels CSV.

    Args:
        annotations_dir: Folder (local or `gs://`) holding the .xml files, in any sub-folders.
        output_csv: The labels CSV to write.
        images_dir: Folder the images are in; default: each XML's own folder. The CSV's
            `filename` column is relative to this folder (or to `annotations_dir` by default).
        report_path: Where to write the report as JSON (also written when `strict` fails).
        strict: Make every warning, dropped object and dropped image an error.
        progress: Show a progress bar on stderr (only when it is a terminal).

    Each real sub-folder is read once: a folder reached again through a symbolic link (a link
    loop, or two links to one folder) is listed in the report's `linked_folders_skipped`, not
    read twice. A sub-folder that cannot be read is an error naming it.

    Returns:
        The report: images, objects, empty_images, classes, dropped, dropped_images, warnings, ...
    """
    annotations_dir = str(annotations_dir)
    images_dir = str(images_dir) if images_dir else None  # "" (an unset pipeline parameter) means "not given"
    if images_dir is not None and not storage.is_dir(images_dir):
        raise UserError(f"{images_dir}: images folder not found; check --images-dir")
    for path in (output_csv, report_path) if report_path else (output_csv,):
        storage.make_writable_dir(storage.split(str(path))[0])  # fail before the work, not after
    listing = _list_xml(annotations_dir)
    files = listing.files
    if not files:
        raise UserError(f"{annotations_dir}: no .xml files found (searched sub-folders too); pass the folder labelImg saved to")
    run = Conversion(annotations_dir, images_dir)
    for rel in listing.broken:
        run.warn(rel, "broken symbolic link (its target does not exist); skipped")
    with progress_bar(len(files), "csv", "xml", enabled=progress) as bar:
        for rel in files:
            run.add_xml(rel)
            bar.update(1)
    report = run.report(listing)
    if report_path:
        storage.write_text(str(report_path), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    problems = [f"{d['file']}: image dropped: {d['reason']}" for d in run.dropped_images]
    problems += [f"{d['file']}: {d['class']!r} dropped: {d['reason']}" for d in run.dropped]
    problems += [f"{w['file']}: {w['message']}" for w in run.warnings]
    if strict and problems:
        more = f" (and {len(problems) - 1} more problem(s)" + (f", listed in {report_path})" if report_path else ")")
        raise UserError(f"{problems[0]}{more if len(problems) > 1 else ''}; fix the annotations or run without --strict")
    if not run.rows:
        raise UserError(
            f"{annotations_dir}: none of the {len(files)} annotation file(s) gave a usable image "
            f"(first problem: {problems[0] if problems else 'none'}); fix that, or pass --images-dir"
        )
    storage.write_text(str(output_csv), format_labels_csv(run.rows))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("annotations_dir", metavar="ANNOTATIONS_DIR", help="folder of labelImg .xml files (searched recursively)")
    parser.add_argument("-o", "--output", required=True, help="labels CSV to write")
    parser.add_argument(
        "--images-dir",
        help="folder holding the images; <filename> is relative to it (default: each XML's own folder)",
    )
    parser.add_argument("--report", help="write the report (counts, drops, warnings) to this JSON file")
    parser.add_argument("--strict", action="store_true", help="treat every warning and dropped object/image as an error")


def run(args: argparse.Namespace) -> int:
    report = xml_to_csv(args.annotations_dir, args.output, images_dir=args.images_dir, report_path=args.report, strict=args.strict)
    classes = ", ".join(f"{k}={v}" for k, v in report["classes"].items()) or "none"
    print(
        f"read {report['xml_files']} XML files: {report['images']} images ({report['empty_images']} without objects), "
        f"{report['objects']} objects in {len(report['classes'])} classes ({classes})"
    )
    print(
        f"dropped {len(report['dropped'])} of {report['objects_in_xml']} objects and {len(report['dropped_images'])} images; "
        f"{report['clipped_boxes']} boxes clipped; {len(report['warnings'])} warnings"
    )
    shown = [f"image dropped {d['file']}: {d['reason']}" for d in report["dropped_images"]]
    shown += [f"dropped {d['file']} {d['class']!r}: {d['reason']}" for d in report["dropped"]]
    shown += [f"warning {w['file']}: {w['message']}" for w in report["warnings"]]
    for line in shown[:5]:
        print(f"  {line}")
    if len(shown) > 5:
        print(f"  ... {len(shown) - 5} more" + (f" in {args.report}" if args.report else " (write them all with --report)"))
    print(f"wrote {args.output}")
    return 0
