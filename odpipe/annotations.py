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
* Hidden files and folders (names starting with ".", e.g. macOS `._img.xml`) are skipped and
  counted. A malformed XML file, or one whose root is not <annotation>, is an error; so is any XML
  with entity declarations (entity expansion / external entities are refused, not expanded).

`objects` (written) + len(`dropped`) == `objects_in_xml` always holds in the report.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import posixpath
import re
from collections import Counter

import pandas as pd

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.schema import CSV_BOX as _BOX
from odpipe.schema import CSV_COLUMNS
from odpipe.schema import CSV_REQUIRED as _REQUIRED

# Image files odpipe reads (the records stage converts all but JPEG/PNG): the annotations' look-up and predict's folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CLIP_TOLERANCE = 1.0  # pixels; smaller clips are the usual 1-based off-by-one, only counted


def read_labels_csv(path: str) -> pd.DataFrame:
    """Read a labels CSV (local or `gs://`) with the right types: `odpipe.schema.read_labels` (the one
    reader of the CSV contract) as a DataFrame with columns CSV_COLUMNS."""
    from odpipe.schema import read_labels

    columns = read_labels(path)
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype=_DTYPES.get(name, object)) for name in CSV_COLUMNS})
    return frame


_DTYPES = {"width": "int64", "height": "int64", "difficult": "int64", "truncated": "int64",
           **{name: "float64" for name in _BOX}}


def format_number(value) -> str:
    """CSV text of a coordinate: integers without a decimal point ("12"), other floats exactly ("12.7")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


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


# ---------------------------------------------------------------------------------------------
# XML -> CSV


class _Folder:
    """Cached listing of one folder: exact and lower-cased file names."""

    def __init__(self, path: str):
        self.path = path
        names: list[str] = []
        if storage.is_remote(path):
            prefix = path.rstrip("/") + "/"
            names = [p[len(prefix) :] for p in storage.glob(prefix + "*") if "/" not in p[len(prefix) :]]
        elif os.path.isdir(path):
            with os.scandir(path) as entries:
                names = sorted(e.name for e in entries if e.is_file())
        self.names = set(names)
        self.lower: dict[str, list[str]] = {}
        for n in names:
            self.lower.setdefault(n.lower(), []).append(n)


def _list_xml(annotations_dir: str) -> tuple[list[str], int]:
    """Sorted relative paths (with `/`) of the .xml files under a folder, and the hidden ones skipped."""
    hidden = 0
    found: list[str] = []
    if storage.is_remote(annotations_dir):
        prefix = annotations_dir.rstrip("/") + "/"
        for path in storage.glob(prefix + "**"):
            rel = path[len(prefix) :]
            if not rel.lower().endswith(".xml"):
                continue
            if any(part.startswith(".") for part in rel.split("/")):
                hidden += 1
                continue
            found.append(rel)
        return sorted(found), hidden
    if not os.path.isdir(annotations_dir):
        raise UserError(f"{annotations_dir}: annotations folder not found; pass the folder labelImg saved its .xml files to")
    for root, dirs, files in os.walk(annotations_dir, followlinks=True):
        hidden += sum(1 for d in dirs if d.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.lower().endswith(".xml"):
                continue
            if name.startswith("."):
                hidden += 1
                continue
            rel = os.path.relpath(os.path.join(root, name), annotations_dir)
            found.append(rel.replace(os.sep, "/"))
    return sorted(found), hidden


def _parse_xml(data: bytes, source: str):
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        root = DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise UserError(
            f"{source}: refused, the XML declares entities ({type(err).__name__}: {err}); labelImg never writes "
            "them -- remove the <!DOCTYPE ...> block or the file"
        ) from None
    except Exception as err:  # xml.etree.ElementTree.ParseError and expat errors
        raise UserError(f"{source}: not well-formed XML ({err}); fix or re-save it in labelImg") from None
    if root.tag != "annotation":
        raise UserError(
            f"{source}: root element is <{root.tag}>, not <annotation>, so it is not a Pascal VOC file; move it out of the folder"
        )
    return root


def _text(element, path: str) -> str | None:
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _flag(text: str | None) -> int | None:
    """0/1 for difficult/truncated; None when unreadable."""
    if text is None or text == "":
        return 0
    low = text.lower()
    if low in ("true", "yes"):
        return 1
    if low in ("false", "no"):
        return 0
    value = _number(text)
    return None if value is None else int(value != 0)


def _safe_relative(name: str, source: str) -> str:
    """`<filename>` as a relative posix path; UserError when it would escape its folder."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise UserError(
            f"{source}: <filename> {name!r} is an absolute path, which would escape the images folder; "
            "write the bare file name (as labelImg does) and pass --images-dir"
        )
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(
            f"{source}: <filename> {name!r} climbs out of the images folder with '..'; "
            "write the file name relative to the images folder (or pass --images-dir)"
        )
    return "/".join(parts)


def _image_header(path: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the image header; pixels are not decoded."""
    from PIL import Image

    with storage.open_read(path) as f:
        with Image.open(f) as image:
            width, height = image.size
            try:
                orientation = int(image.getexif().get(0x0112, 1) or 1)
            except Exception:  # a broken EXIF block does not make the image unusable
                orientation = 1
    return width, height, orientation


class _Run:
    """State of one xml_to_csv run."""

    def __init__(self, annotations_dir: str, images_dir: str | None):
        self.annotations_dir = annotations_dir
        self.images_dir = images_dir
        self.images_root = images_dir if images_dir is not None else annotations_dir
        self.folders: dict[str, _Folder] = {}
        self.rows: list[list] = []
        self.dropped: list[dict] = []
        self.dropped_images: list[dict] = []
        self.warnings: list[dict] = []
        self.classes: Counter = Counter()
        self.images = 0
        self.empty_images = 0
        self.objects_in_xml = 0
        self.clipped = 0
        self.seen: dict[str, str] = {}  # image rel path -> xml rel path

    def folder(self, path: str) -> _Folder:
        if path not in self.folders:
            self.folders[path] = _Folder(path)
        return self.folders[path]

    def listing(self, folder_rel: str) -> _Folder:
        """The listing of a folder given relative to the images root ("" for the root)."""
        return self.folder(storage.join(self.images_root, *folder_rel.split("/")) if folder_rel else self.images_root)

    def warn(self, file: str, message: str) -> None:
        self.warnings.append({"file": file, "message": message})

    def find_image(self, rel_xml: str, name: str | None) -> tuple[str | None, str | None]:
        """(image path relative to images_root, warning) or (None, reason)."""
        sub = posixpath.dirname(rel_xml)
        bases = [sub, ""] if self.images_dir is not None and sub else [sub]
        candidates: list[tuple[str, str]] = []  # (folder rel to root, file name)
        if name:
            for base in bases:
                full = posixpath.join(base, name) if base else name
                candidates.append((posixpath.dirname(full), posixpath.basename(full)))
        for folder_rel, fname in candidates:
            listing = self.listing(folder_rel)
            if fname in listing.names:
                return posixpath.join(folder_rel, fname), None
        for folder_rel, fname in candidates:
            listing = self.listing(folder_rel)
            same = listing.lower.get(fname.lower())
            if same:
                found = posixpath.join(folder_rel, same[0])
                return found, f"<filename> {name!r} not found; using {found!r} (same name, other letter case)"
        stem = posixpath.splitext(posixpath.basename(rel_xml))[0]
        stems = [(stem, "the image with the XML's name")]
        if name and posixpath.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            stems.append((name, "<filename> had no image extension"))  # some tools write the stem only
        for base in bases:
            for candidate, why in stems:
                folder_rel = posixpath.join(base, posixpath.dirname(candidate)).strip("/")
                listing = self.listing(folder_rel)
                for ext in IMAGE_EXTENSIONS:
                    same = listing.lower.get((posixpath.basename(candidate) + ext).lower())
                    if same:
                        found = posixpath.join(folder_rel, same[0]) if folder_rel else same[0]
                        what = f"<filename> {name!r} not found" if name else "no <filename>"
                        return found, f"{what}; using {found!r} ({why})"
        where = self.images_root if not bases[0] else storage.join(self.images_root, *bases[0].split("/"))
        what = f"image {name!r}" if name else "no <filename> and no image"
        hint = "" if self.images_dir is not None else "; pass --images-dir if the images are in another folder"
        return None, f"{what} not found in {where} (nor one named {stem}.jpg/.png/...){hint}"

    def add_xml(self, rel_xml: str) -> None:
        source = storage.join(self.annotations_dir, *rel_xml.split("/"))
        root = _parse_xml(storage.read_bytes(source), source)
        objects = root.findall("object")
        self.objects_in_xml += len(objects)

        def drop_all(reason: str, kind: str) -> None:
            self.dropped_images.append({"file": rel_xml, "reason": reason})
            for obj in objects:
                self.dropped.append({"file": rel_xml, "class": _text(obj, "name") or "", "reason": kind})

        name = _text(root, "filename")
        safe = _safe_relative(name, source) if name else None
        image_rel, note = self.find_image(rel_xml, safe)
        if image_rel is None:
            drop_all(note, "image not found")
            return
        if note:
            self.warn(rel_xml, note)
        if image_rel in self.seen:
            reason = f"duplicate annotation of {image_rel} (already annotated by {self.seen[image_rel]}; the first file wins)"
            self.warn(rel_xml, reason)
            for obj in objects:
                self.dropped.append({"file": rel_xml, "class": _text(obj, "name") or "", "reason": reason})
            return
        image_path = storage.join(self.images_root, *image_rel.split("/"))
        try:
            width, height, orientation = _image_header(image_path)
        except Exception as err:  # PIL: UnidentifiedImageError, DecompressionBombError, OSError
            drop_all(f"{image_rel}: not a readable image ({type(err).__name__}: {err})", "unreadable image")
            return
        self.seen[image_rel] = rel_xml
        xml_w, xml_h = _number(_text(root, "size/width")), _number(_text(root, "size/height"))
        if xml_w and xml_h and xml_w > 0 and xml_h > 0 and (xml_w, xml_h) != (width, height):  # 0: size not recorded
            message = f"<size> says {format_number(xml_w)}x{format_number(xml_h)} but {image_rel} is {width}x{height}; using the image's size"
            if orientation in (5, 6, 7, 8) and (xml_w, xml_h) == (height, width):
                message += (
                    f" (EXIF orientation {orientation}: the tool that wrote this XML rotated the image, so the boxes may be"
                    " rotated too; rotate the image's pixels, e.g. `exiftran -ai`, and re-label)"
                )
            else:
                message += " (if the images were resized after labelling, the boxes no longer fit them)"
            self.warn(rel_xml, message)
        elif orientation not in (1, 0):
            self.warn(
                rel_xml,
                f"{image_rel} has EXIF orientation {orientation}; boxes are taken on the stored pixels, as labelImg shows them",
            )

        kept = []
        boxes_seen: set[tuple] = set()
        for obj in objects:
            cls = _text(obj, "name") or ""
            if not cls:
                self.dropped.append({"file": rel_xml, "class": "", "reason": "object has an empty <name>"})
                continue
            box = obj.find("bndbox")
            if box is None:
                self.dropped.append({"file": rel_xml, "class": cls, "reason": "object has no <bndbox>"})
                continue
            raw = {k: _text(box, k) for k in _BOX}
            values = {k: _number(v) for k, v in raw.items()}
            bad = [f"{k}={raw[k]!r}" for k in _BOX if values[k] is None]
            if bad:
                self.dropped.append({"file": rel_xml, "class": cls, "reason": f"coordinate not a number: {', '.join(bad)}"})
                continue
            x0, y0, x1, y1 = (values[k] for k in _BOX)
            if x0 > x1 or y0 > y1:
                self.dropped.append(
                    {"file": rel_xml, "class": cls, "reason": f"inverted box ({', '.join(f'{k}={raw[k]}' for k in _BOX)})"}
                )
                continue
            cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            if cx1 <= cx0 or cy1 <= cy0:
                self.dropped.append(
                    {
                        "file": rel_xml,
                        "class": cls,
                        "reason": f"zero area after clipping to the {width}x{height} image "
                        f"({', '.join(f'{k}={raw[k]}' for k in _BOX)})",
                    }
                )
                continue
            overshoot = max(abs(cx0 - x0), abs(cy0 - y0), abs(cx1 - x1), abs(cy1 - y1))
            if overshoot > 0:
                self.clipped += 1
                if overshoot > _CLIP_TOLERANCE:
                    self.warn(
                        rel_xml,
                        f"{cls!r} box ({', '.join(f'{k}={raw[k]}' for k in _BOX)}) reaches {format_number(overshoot)} px "
                        f"outside the {width}x{height} image; clipped",
                    )
            difficult, truncated = _flag(_text(obj, "difficult")), _flag(_text(obj, "truncated"))
            for tag, value in (("difficult", difficult), ("truncated", truncated)):
                if value is None:
                    self.warn(rel_xml, f"{cls!r} <{tag}> {_text(obj, tag)!r} is not 0/1; using 0")
            if (cls, cx0, cy0, cx1, cy1) in boxes_seen:
                corners = ", ".join(format_number(v) for v in (cx0, cy0, cx1, cy1))
                reason = f"duplicate box (same class and corners {corners} as an earlier object)"
                self.dropped.append({"file": rel_xml, "class": cls, "reason": reason})
                continue
            boxes_seen.add((cls, cx0, cy0, cx1, cy1))
            kept.append([image_rel, width, height, cls, cx0, cy0, cx1, cy1, difficult or 0, truncated or 0])
        if objects and not kept:
            self.dropped_images.append(
                {"file": rel_xml, "reason": f"all {len(objects)} objects were dropped (kept, it would teach 'nothing here')"}
            )
            del self.seen[image_rel]
            return
        self.images += 1
        if not kept:
            self.empty_images += 1
            self.rows.append([image_rel, width, height, "", None, None, None, None, 0, 0])
        for row in kept:
            self.classes[row[3]] += 1
            self.rows.append(row)

    def report(self, xml_files: int, hidden: int) -> dict:
        return {
            "annotations_dir": str(self.annotations_dir),
            "images_dir": str(self.images_root),
            "xml_files": xml_files,
            "hidden_files_skipped": hidden,
            "images": self.images,
            "objects": sum(self.classes.values()),
            "objects_in_xml": self.objects_in_xml,
            "empty_images": self.empty_images,
            "classes": dict(sorted(self.classes.items())),
            "clipped_boxes": self.clipped,
            "dropped": self.dropped,
            "dropped_images": self.dropped_images,
            "warnings": self.warnings,
        }


def xml_to_csv(
    annotations_dir: str,
    output_csv: str,
    images_dir: str | None = None,
    report_path: str | None = None,
    strict: bool = False,
) -> dict:
    """Convert a folder of labelImg XML files (searched recursively) into one labels CSV.

    Args:
        annotations_dir: Folder (local or `gs://`) holding the .xml files, in any sub-folders.
        output_csv: The labels CSV to write.
        images_dir: Folder the images are in; default: each XML's own folder. The CSV's
            `filename` column is relative to this folder (or to `annotations_dir` by default).
        report_path: Where to write the report as JSON (also written when `strict` fails).
        strict: Make every warning, dropped object and dropped image an error.

    Returns:
        The report: images, objects, empty_images, classes, dropped, dropped_images, warnings, ...
    """
    annotations_dir = str(annotations_dir)
    images_dir = str(images_dir) if images_dir else None  # "" (an unset pipeline parameter) means "not given"
    if images_dir is not None and not storage.is_remote(images_dir) and not os.path.isdir(images_dir):
        raise UserError(f"{images_dir}: images folder not found; check --images-dir")
    files, hidden = _list_xml(annotations_dir)
    if not files:
        raise UserError(f"{annotations_dir}: no .xml files found (searched sub-folders too); pass the folder labelImg saved to")
    run = _Run(annotations_dir, images_dir)
    for rel in files:
        run.add_xml(rel)
    report = run.report(len(files), hidden)
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
