"""Image facts in one pass over the files: format, stored size, colour mode, EXIF rotation, damage,
a SHA-256 of the bytes (exact duplicates, as `odpipe split` groups them) and, for near duplicates
(re-encoded, resized, captioned copies; neighbouring video frames), an 8x8 average hash of the grey
image (64 bits: brighter than the mean or not) plus an 8x8 colour thumbnail. Two images are near
duplicates when their hashes differ in at most `NEAR_DUPLICATE_BITS` bits *and* their thumbnails
differ by at most `NEAR_DUPLICATE_MAD` (mean absolute difference, 0-255): the hash alone matches
flat, two-tone images (measured on `odpipe sample-data`), the thumbnail alone matches images of
the same grey level.

JPEGs are decoded at reduced size (Pillow's draft mode: 1/8 scale) for the hash, and their marker
walk is the records stage's (`odpipe.records.images.jpeg_structure_problem`), which also reads the
EXIF orientation; PNGs get the records stage's chunk-CRC walk. Reads run in a thread pool.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from odpipe import storage
from odpipe.errors import first_line
from odpipe.progress import progress_bar
from odpipe.records.images import jpeg_structure_problem, png_structure_problem

NEAR_DUPLICATE_BITS = 8  # average hashes at most this many bits apart (of 64) ...
NEAR_DUPLICATE_MAD = 12.0  # ... and colour thumbnails at most this far apart are near duplicates
_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def fingerprint(img) -> tuple[int, bytes]:
    """(64-bit average hash of the 8x8 grey image, 8x8 RGB thumbnail bytes)."""
    grey = np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=float)
    bits = np.packbits((grey > grey.mean()).flatten()).view(">u8")[0]
    return int(bits), img.convert("RGB").resize((8, 8), Image.Resampling.BOX).tobytes()


def image_facts(path: str) -> dict:
    """What one image file is: {"format", "width", "height", "mode", "colour", "exif_rotated",
    "problem", "sha256", "ahash", "thumb", "bytes"}; {"missing": True} or {"unreadable": reason} otherwise."""
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return {"missing": True}
    except OSError as err:
        return {"unreadable": f"{type(err).__name__}: {first_line(err, 120)}"}
    facts: dict = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "problem": None,
                   "exif_rotated": False}
    try:
        img = Image.open(io.BytesIO(data))
        facts.update(format=str(img.format).lower(), width=img.width, height=img.height, mode=img.mode)
        if img.format in ("JPEG", "MPO"):
            header: dict = {}
            facts["problem"] = jpeg_structure_problem(data, header)[0]
            facts["exif_rotated"] = header.get("orientation") not in (1, None)
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        elif img.format == "PNG":
            facts["problem"] = png_structure_problem(data)
        facts["colour"] = "grayscale" if img.mode in _GREY else "cmyk" if img.mode == "CMYK" else "colour"
        facts["ahash"], facts["thumb"] = fingerprint(img)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad data; the report lists it
        facts.setdefault("format", "unknown")
        facts["unreadable"] = f"{type(err).__name__}: {first_line(err, 120)}"
    return facts


def scan_images(images_dir: str, filenames: list[str], progress: bool = True, workers: int = 8) -> dict[str, dict]:
    """{filename: image_facts} for the CSV's filenames (relative to `images_dir`), read in parallel."""
    paths = [storage.join(str(images_dir), *name.split("/")) for name in filenames]
    out: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(len(paths), "data-report: reading images", "img", progress) as bar:
        for name, facts in zip(filenames, pool.map(image_facts, paths)):
            out[name] = facts
            bar.update(1)
    return out


def _groups(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components (union-find) of `pairs` over 0..n-1, only those of two or more."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    found: dict[int, list[int]] = {}
    for i in range(n):
        found.setdefault(root(i), []).append(i)
    return sorted((g for g in found.values() if len(g) > 1), key=lambda g: g[0])


def near_pairs(hashes: list[int], thumbs: list[bytes], max_bits: int = NEAR_DUPLICATE_BITS,
               max_mad: float = NEAR_DUPLICATE_MAD, chunk: int = 512) -> list[tuple[int, int]]:
    """Index pairs (i < j) of near duplicates: hashes at most `max_bits` apart, confirmed by
    thumbnails at most `max_mad` apart (numpy, in chunks of rows)."""
    h = np.array(hashes, dtype=np.uint64)
    t = np.frombuffer(b"".join(thumbs), dtype=np.uint8).reshape(len(thumbs), -1).astype(np.int16) \
        if thumbs else np.zeros((0, 192), np.int16)
    pairs = []
    for start in range(0, len(h), chunk):
        block = h[start:start + chunk, None] ^ h[None, :]
        i, j = np.nonzero(np.bitwise_count(block) <= max_bits)
        i = i + start
        keep = i < j
        i, j = i[keep], j[keep]
        close = np.abs(t[i] - t[j]).mean(axis=1) <= max_mad
        pairs += list(zip(i[close].tolist(), j[close].tolist()))
    return pairs


def duplicates(facts: dict[str, dict]) -> tuple[list[list[str]], list[list[str]]]:
    """(exact duplicate groups by SHA-256, near-duplicate groups) of filenames. Near duplicates are
    searched among one file per SHA-256 (a near group lists the exact copies too) and reported only
    when a group holds more than one distinct content."""
    names = sorted(n for n, f in facts.items() if "sha256" in f)
    by_hash: dict[str, list[str]] = {}
    for name in names:
        by_hash.setdefault(facts[name]["sha256"], []).append(name)
    exact = sorted(g for g in by_hash.values() if len(g) > 1)
    firsts = [g[0] for g in by_hash.values() if "ahash" in facts[g[0]]]
    pairs = near_pairs([facts[n]["ahash"] for n in firsts], [facts[n]["thumb"] for n in firsts])
    near = [sorted(f for i in group for f in by_hash[facts[firsts[i]]["sha256"]])
            for group in _groups(pairs, len(firsts))]
    return exact, sorted(near)


def summarise(facts: dict[str, dict], csv_sizes: dict[str, tuple[int, int, int]]) -> dict:
    """Counts over the scanned images, and the files behind each problem (CSV size != stored size,
    missing, unreadable, damaged)."""
    formats: dict[str, int] = {}
    out = {"scanned": len(facts), "missing": [], "unreadable": [], "damaged": [], "size_mismatch": [],
           "grayscale": 0, "cmyk": 0, "exif_rotated": [], "formats": formats}
    for name, f in sorted(facts.items()):
        if f.get("missing"):
            out["missing"].append(name)
            continue
        if "unreadable" in f:
            out["unreadable"].append({"file": name, "reason": f["unreadable"]})
            continue
        formats[f["format"]] = formats.get(f["format"], 0) + 1
        out["grayscale"] += f["colour"] == "grayscale"
        out["cmyk"] += f["colour"] == "cmyk"
        if f["exif_rotated"]:
            out["exif_rotated"].append(name)
        if f["problem"]:
            out["damaged"].append({"file": name, "reason": f["problem"]})
        w, h, _ = csv_sizes.get(name, (f["width"], f["height"], 0))
        if (w, h) != (f["width"], f["height"]):
            out["size_mismatch"].append({"file": name, "csv": [w, h], "stored": [f["width"], f["height"]]})
    exact, near = duplicates(facts)
    out["duplicates"], out["near_duplicates"] = exact, near
    return out
