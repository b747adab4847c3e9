"""labelImg (Pascal VOC XML) files -> labels CSV rows: parsing, the image look-up, box checks.

The conventions (coordinates, EXIF orientation, <filename>, drops, duplicates) are documented in
odpipe/annotations.py, the stage that walks the folder and writes the CSV; `Conversion` is its
per-file state.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException
from PIL import Image

from odpipe import storage
from odpipe.errors import UserError, first_line

# Image files odpipe reads (the records stage converts all but JPEG/PNG): the annotations' look-up and predict's folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_BOX = ["xmin", "ymin", "xmax", "ymax"]
_DRIVE = re.compile(r"^[A-Za-z]:")
_CLIP_TOLERANCE = 1.0  # pixels; smaller clips are the usual 1-based off-by-one, only counted


def format_number(value) -> str:
    """CSV text of a coordinate: integers without a decimal point ("12"), other floats exactly ("12.7")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)



class _Folder:
    """Cached listing of one folder: exact and lower-cased file names."""

    def __init__(self, path: str):
        self.path = path
        try:
            names = storage.walk(path, recursive=False).files
        except OSError as err:
            raise UserError(
                f"{path}: cannot list this images folder ({err.strerror or first_line(err)}); fix its permissions "
                "(e.g. chmod u+rx) so its images can be found"
            ) from None
        self.names = set(names)
        self.lower: dict[str, list[str]] = {}
        for n in names:
            self.lower.setdefault(n.lower(), []).append(n)


def _parse_xml(data: bytes, source: str):
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
    with storage.open_read(path) as f:
        with Image.open(f) as image:
            width, height = image.size
            try:
                orientation = int(image.getexif().get(0x0112, 1) or 1)
            except Exception:  # a broken EXIF block does not make the image unusable
                orientation = 1
    return width, height, orientation


class Conversion:
    """State of one `odpipe csv` run: `add_xml` each file, then `report`; `rows` are the CSV rows."""

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
        """Add one XML file's rows (or its drops and warnings)."""
        source = storage.join(self.annotations_dir, *rel_xml.split("/"))
        root = _parse_xml(self._read(source), source)
        objects = root.findall("object")
        self.objects_in_xml += len(objects)
        image_rel = self._image_of(rel_xml, root, source, objects)
        if image_rel is None:
            return
        image_path = storage.join(self.images_root, *image_rel.split("/"))
        try:
            width, height, orientation = _image_header(image_path)
        except Exception as err:  # PIL: UnidentifiedImageError, DecompressionBombError, OSError
            self._drop_all(rel_xml, objects, f"{image_rel}: not a readable image ({type(err).__name__}: {err})",
                           "unreadable image")
            return
        self.seen[image_rel] = rel_xml
        self._check_size(rel_xml, root, image_rel, (width, height), orientation)
        kept = []
        boxes_seen: set[tuple] = set()
        for obj in objects:
            row = self._object_row(rel_xml, obj, image_rel, width, height, boxes_seen)
            if row is not None:
                kept.append(row)
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

    @staticmethod
    def _read(source: str) -> bytes:
        try:
            return storage.read_bytes(source)
        except OSError as err:
            raise UserError(
                f"{source}: cannot read this annotation file ({err.strerror or first_line(err)}); fix its permissions "
                "or move it out of the annotations folder"
            ) from None

    def _drop_all(self, rel_xml: str, objects: list, reason: str, kind: str) -> None:
        self.dropped_images.append({"file": rel_xml, "reason": reason})
        for obj in objects:
            self.dropped.append({"file": rel_xml, "class": _text(obj, "name") or "", "reason": kind})

    def _image_of(self, rel_xml: str, root, source: str, objects: list) -> str | None:
        """The image an XML file annotates (relative to the images folder), or None when it is not
        found or already annotated by an earlier XML (its objects dropped, saying why)."""
        name = _text(root, "filename")
        safe = _safe_relative(name, source) if name else None
        image_rel, note = self.find_image(rel_xml, safe)
        if image_rel is None:
            self._drop_all(rel_xml, objects, note, "image not found")
            return None
        if note:
            self.warn(rel_xml, note)
        if image_rel in self.seen:
            reason = f"duplicate annotation of {image_rel} (already annotated by {self.seen[image_rel]}; the first file wins)"
            self.warn(rel_xml, reason)
            for obj in objects:
                self.dropped.append({"file": rel_xml, "class": _text(obj, "name") or "", "reason": reason})
            return None
        return image_rel

    def _check_size(self, rel_xml: str, root, image_rel: str, size: tuple, orientation: int) -> None:
        """Warn when <size> disagrees with the image, or the image has an EXIF orientation."""
        width, height = size
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

    def _object_row(self, rel_xml: str, obj, image_rel: str, width: int, height: int, boxes_seen: set) -> list | None:
        """The CSV row of one <object>, or None when it is dropped (the reason recorded)."""
        cls = _text(obj, "name") or ""
        if not cls:
            self.dropped.append({"file": rel_xml, "class": "", "reason": "object has an empty <name>"})
            return None
        box = self._clipped_box(rel_xml, cls, obj, width, height)
        if box is None:
            return None
        difficult, truncated = _flag(_text(obj, "difficult")), _flag(_text(obj, "truncated"))
        for tag, value in (("difficult", difficult), ("truncated", truncated)):
            if value is None:
                self.warn(rel_xml, f"{cls!r} <{tag}> {_text(obj, tag)!r} is not 0/1; using 0")
        if (cls, *box) in boxes_seen:
            corners = ", ".join(format_number(v) for v in box)
            reason = f"duplicate box (same class and corners {corners} as an earlier object)"
            self.dropped.append({"file": rel_xml, "class": cls, "reason": reason})
            return None
        boxes_seen.add((cls, *box))
        return [image_rel, width, height, cls, *box, difficult or 0, truncated or 0]

    def _clipped_box(self, rel_xml: str, cls: str, obj, width: int, height: int) -> tuple | None:
        """(xmin, ymin, xmax, ymax) of an object's <bndbox> clipped to the image, or None when it is
        missing, not numbers, inverted or of zero area once clipped (the reason recorded)."""
        box = obj.find("bndbox")
        if box is None:
            self.dropped.append({"file": rel_xml, "class": cls, "reason": "object has no <bndbox>"})
            return None
        raw = {k: _text(box, k) for k in _BOX}
        values = {k: _number(v) for k, v in raw.items()}
        bad = [f"{k}={raw[k]!r}" for k in _BOX if values[k] is None]
        if bad:
            self.dropped.append({"file": rel_xml, "class": cls, "reason": f"coordinate not a number: {', '.join(bad)}"})
            return None
        x0, y0, x1, y1 = (values[k] for k in _BOX)
        corners = ", ".join(f"{k}={raw[k]}" for k in _BOX)
        if x0 > x1 or y0 > y1:
            self.dropped.append({"file": rel_xml, "class": cls, "reason": f"inverted box ({corners})"})
            return None
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        if cx1 <= cx0 or cy1 <= cy0:
            reason = f"zero area after clipping to the {width}x{height} image ({corners})"
            self.dropped.append({"file": rel_xml, "class": cls, "reason": reason})
            return None
        overshoot = max(abs(cx0 - x0), abs(cy0 - y0), abs(cx1 - x1), abs(cy1 - y1))
        if overshoot > 0:
            self.clipped += 1
            if overshoot > _CLIP_TOLERANCE:
                self.warn(rel_xml, f"{cls!r} box ({corners}) reaches {format_number(overshoot)} px "
                                   f"outside the {width}x{height} image; clipped")
        return cx0, cy0, cx1, cy1

    def report(self, listing: storage.Walk) -> dict:
        return {
            "annotations_dir": str(self.annotations_dir),
            "images_dir": str(self.images_root),
            "xml_files": len(listing.files),
            "hidden_files_skipped": listing.hidden,
            "linked_folders_skipped": listing.repeated,
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
