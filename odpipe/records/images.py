"""Image checks and conversion for TensorFlow's decoder: `prepare_image(bytes) -> Prepared`; pure.

Every record must decode with Model Garden's `TfExampleDecoder` (`tf.io.decode_image(...,
channels=3)`) at the size it claims.
- Kept byte for byte: JPEG in L/RGB (grayscale, progressive, camera MPO) and PNG in
  1/L/RGB/P-without-transparency. Each is walked to its end (JPEG marker segments and scan data up
  to the end-of-image marker, PNG chunk CRCs up to IEND: truncation and garbage bytes, which TF's
  decoder rejects, are caught) and, with `verify="pixels"` (default), its pixel data is
  entropy-decoded once (JPEG at 1/8 scale, which still reads every coefficient), proving it
  decodes at its size. `verify="structure"` skips the decode.
- Repaired: a JPEG that only lacks its end (no end-of-image marker after valid scan data, as an
  interrupted copy leaves it) is decoded as far as it goes (libjpeg fills the rest grey), re-encoded
  (quality 95) and kept with its objects; `Prepared.repaired` says what was wrong.
- Converted: CMYK/YCCK JPEG -> RGB JPEG (quality 95, Adobe inversion handled by Pillow);
  RGBA/LA/transparent-palette -> flattened over white -> PNG; 16-bit PNG -> 8-bit PNG;
  BMP/GIF/WebP/TIFF -> PNG (first frame; TF decodes GIF/WebP as 4-D animations).
- Rejected (`Rejected`, with a counter key and a reason): unreadable (not an image), corrupt
  (garbage inside, header damage, nothing decodable), too large (Pillow's decompression-bomb limit).
EXIF orientation is ignored: the stored pixels are what TF decodes and what labelImg shows and
annotates (labelImg loads with Qt's QImage.fromData, which does not apply the tag: labelImg issues
#198, #342, #395); a kept JPEG with a rotating tag is flagged (`exif_rotated`).
"""

from __future__ import annotations

import io
import re
import zlib
from typing import NamedTuple

VERIFY_MODES = ("pixels", "structure")
VERIFY_ALIASES = {"header": "structure"}  # the name of "structure" before it walked the whole file

_KEEP_JPEG_MODES = {"L", "RGB"}
_KEEP_PNG_MODES = {"1", "L", "RGB", "P"}


class Rejected(Exception):
    """An image that cannot be written; `key` is the counter name, the message the reason."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Prepared(NamedTuple):
    data: bytes  # what goes into image/encoded
    format: str  # "jpeg" | "png"
    width: int
    height: int
    conversion: str | None = None  # e.g. "jpeg_cmyk_to_rgb"
    exif_rotated: bool = False
    repaired: str | None = None  # the damage that was repaired


def normalise_verify(verify: str) -> str:
    return VERIFY_ALIASES.get(verify, verify)


# After a JPEG's first SOS, a 0xFF byte followed by anything but 0x00 (stuffing), RST0-7 or 0xFF (fill)
# is a marker; these are the ones a (progressive) JPEG may carry between scans and before EOI.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_BETWEEN_SCANS = {0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}
TRUNCATED_JPEG = "truncated JPEG file (no end-of-image marker)"


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_structure_problem(data: bytes, header: dict | None = None) -> tuple[str | None, bool]:
    """Walk a JPEG's marker segments and entropy-coded data to EOI: (problem or None, repairable).

    A hand-written walk because it is the cheap part of the check: measured on 10k 640x480 photos,
    it halves the time of `--verify structure` against a Pillow decode (regex search in C over the
    scan data), and with `header` (filled with the first SOF's "width", "height", "components" and
    the EXIF "orientation") it also replaces Pillow's header parse there (0.07 vs 0.45 ms per
    raccoon photo, measured). Catches truncation (repairable when scan data had started) and data
    TF's decoder rejects as an unsupported marker inside the scan (garbage bytes); not bit flips
    that still decode.
    """
    pos, size, scans = 2, len(data), 0
    while pos < size:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them (with a warning), so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if scans and marker not in _JPEG_BETWEEN_SCANS:
            return f"invalid marker 0x{marker:02x} inside the image data at byte {pos - 2}", False
        if marker == 0xD9:
            return (None, False) if scans else ("end-of-image marker before any image data", False)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if pos + 2 > size:
            break
        if header is not None:
            if marker in _SOF and "width" not in header and pos + 8 <= size:
                header.update(precision=data[pos + 2], height=int.from_bytes(data[pos + 3:pos + 5], "big"),
                              width=int.from_bytes(data[pos + 5:pos + 7], "big"), components=data[pos + 7])
            elif marker == 0xE1 and data[pos + 2:pos + 8] == b"Exif\0\0" and "orientation" not in header:
                header["orientation"] = _exif_orientation(data[pos + 8:pos + int.from_bytes(data[pos:pos + 2], "big")])
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return TRUNCATED_JPEG, scans > 0


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag (0x0112) of IFD0 in an EXIF TIFF block; None when absent or unreadable."""
    try:
        order = {b"II": "little", b"MM": "big"}[tiff[:2]]
        num = lambda at, n=2: int.from_bytes(tiff[at:at + n], order)  # noqa: E731
        ifd = num(4, 4)
        for entry in range(num(ifd)):
            at = ifd + 2 + 12 * entry
            if num(at) == 0x0112:
                return num(at + 8)
    except (KeyError, IndexError, ValueError):
        pass
    return None


def png_structure_problem(data: bytes) -> str | None:
    """Walk a PNG's chunks checking every CRC up to IEND; the problem found, or None."""
    pos, size = 8, len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > size:
            break
        if zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            return f"corrupt PNG chunk {data[pos + 4:pos + 8].decode('latin-1')!r} (CRC mismatch at byte {pos})"
        if data[pos + 4:pos + 8] == b"IEND":
            return None
        pos = end + 4
    return "truncated PNG file (no IEND chunk)"


def _flatten(img):
    """RGB (or L) image with any transparency composited over white."""
    from PIL import Image

    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        import numpy as np

        arr = np.asarray(img)
        if arr.dtype != np.uint16 and arr.max(initial=0) > 255:
            arr = np.clip(arr, 0, 65535)
        arr = (arr.astype(np.uint32) >> 8) if arr.max(initial=0) > 255 else arr
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


def _encode(img, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=95)
    else:
        img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _orientation(img):
    try:
        return img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - EXIF is informative only
        return None


def _repair_jpeg(data: bytes, width: int, height: int) -> Prepared:
    """Decode a JPEG that lacks its end (an EOI marker appended: libjpeg fills the missing rows) and
    re-encode it; Rejected when even that does not decode at its size."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data + b"\xff\xd9"))
        img.load()
        if img.size != (width, height):
            raise ValueError(f"decodes as {img.size[0]}x{img.size[1]}")
        fixed = _encode(img if img.mode in _KEEP_JPEG_MODES else img.convert("RGB"), "jpeg")
    except Exception as err:  # noqa: BLE001 - not repairable: the original reason stands
        raise Rejected("corrupt", f"{TRUNCATED_JPEG}; not repairable ({type(err).__name__}: {err})") from None
    return Prepared(fixed, "jpeg", width, height, repaired=TRUNCATED_JPEG)


def prepare_image(data: bytes, verify: str = "pixels") -> Prepared:
    """Check (and if needed convert or repair) encoded image bytes for TF's decoder; raises Rejected.

    verify="pixels" (default) decodes kept images (JPEG at 1/8 scale); "structure" stops after the
    marker/chunk walk (several times cheaper; catches truncation and garbage data, not damage only a
    decoder notices). Converted and repaired images are always fully decoded.
    """
    from PIL import Image, UnidentifiedImageError

    verify = normalise_verify(verify)
    if verify == "structure" and data[:3] == b"\xff\xd8\xff":  # the common case without Pillow's header parse
        header: dict = {}
        problem, repairable = jpeg_structure_problem(data, header)
        width, height = header.get("width", 0), header.get("height", 0)
        if (problem is None and header.get("components") in (1, 3) and header.get("precision") == 8
                and width > 0 and height > 0 and width * height <= 2 * Image.MAX_IMAGE_PIXELS):
            rotated = header.get("orientation") not in (1, None)
            return Prepared(data, "jpeg", width, height, None, rotated)
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        width, height = img.size
    except UnidentifiedImageError:
        raise Rejected("unreadable", "not an image file Pillow or TensorFlow can read") from None
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", f"image too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - any parse failure of a header is a corrupt file
        raise Rejected("corrupt", f"corrupt image header ({type(err).__name__}: {err})") from None
    try:
        keep_jpeg = fmt in ("JPEG", "MPO") and img.mode in _KEEP_JPEG_MODES
        keep_png = fmt == "PNG" and img.mode in _KEEP_PNG_MODES and "transparency" not in img.info
        if keep_jpeg:
            problem, repairable = jpeg_structure_problem(data)
            if problem and repairable:
                return _repair_jpeg(data, width, height)
        elif keep_png:
            problem = png_structure_problem(data)
        if keep_jpeg or keep_png:
            if problem:
                raise Rejected("corrupt", problem)
            if verify == "pixels":
                if keep_jpeg:  # DCT-scaled: every coefficient is still entropy-decoded, the IDCT is skipped
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
            rotated = keep_jpeg and "exif" in img.info and _orientation(img) not in (1, None)
            return Prepared(data, "jpeg" if keep_jpeg else "png", width, height, None, bool(rotated))
        img.seek(0)
        img.load()
        if fmt in ("JPEG", "MPO"):
            return Prepared(_encode(img.convert("RGB"), "jpeg"), "jpeg", width, height, f"jpeg_{img.mode.lower()}_to_rgb")
        flat = _flatten(img)
        return Prepared(_encode(flat, "png"), "png", width, height, f"{str(fmt).lower()}_{img.mode.lower()}_to_png")
    except Rejected:
        raise
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", f"image too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises OSError/SyntaxError/ValueError for bad data
        raise Rejected("corrupt", f"corrupt or truncated {fmt} data ({type(err).__name__}: {err})") from None
