"""labels CSV -> OUTDIR/train.csv and OUTDIR/eval.csv: by image, duplicate-safe, stratified by class.

* By image: all rows of an image go to one side; object-less images are split too.
* Duplicates never straddle the split. With `images_dir` (`--images-dir`), images are grouped by
  the SHA-256 of their bytes, so byte-identical copies under different names land on the same side.
  Without it, the fallback groups images whose annotations are identical and non-empty (same size,
  same classes and boxes): it catches copies labelled the same way, not copies labelled
  differently -- pass `--images-dir` for a real content check.
* Stratified: iterative multi-label stratification (Sechidis, Tsoumakas & Vlahavas, 2011) over the
  image groups, weighted by object counts: the rarest class (fewest unassigned groups) is handled
  first, and each of its groups goes to the side whose per-class object quota is least filled
  (ties: the side whose image quota is least filled, then a seeded coin). A repair pass then
  makes every class that occurs in at least two groups appear on both sides, and both sides
  non-empty, moving the smallest groups that take no class away from a side. Object-less images
  count as one more class, so background images are split in proportion too.
* Deterministic for a given seed (groups are ordered by name, then shuffled with the seed).
"""

from __future__ import annotations

import argparse
import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from odpipe import storage
from odpipe.annotations import read_labels_csv, write_labels_csv
from odpipe.errors import UserError, first_line
from odpipe.progress import progress_bar

SIDES = ("train", "eval")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with storage.open_read(path) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise UserError(
            f"{path}: image listed in the CSV not found; pass as --images-dir the folder the CSV's filenames are relative to"
        ) from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the image ({type(err).__name__}: {first_line(err)}); "
                        "fix its permissions or remove it from the CSV") from None
    return digest.hexdigest()


def _group_images(frame, images_dir: str | None, progress: bool = True) -> tuple[list[list[str]], str]:
    """Lists of filenames that must stay together, and how they were found ("sha256"/"annotations")."""
    filenames = sorted(frame["filename"].unique())
    if images_dir is not None:
        paths = [storage.join(str(images_dir), *f.split("/")) for f in filenames]
        keys = []
        with ThreadPoolExecutor(max_workers=8) as pool, progress_bar(len(paths), "split: hashing", "img", progress) as bar:
            for key in pool.map(_sha256, paths):
                keys.append(key)
                bar.update(1)
        method = "sha256"
    else:
        keys = []
        by_name = {name: rows for name, rows in frame.groupby("filename", sort=False)}
        for name in filenames:
            rows = by_name[name]
            objects = rows[rows["class"] != ""]
            if objects.empty:
                keys.append(("name", name))  # object-less images are only grouped by content hash
                continue
            boxes = sorted(
                zip(objects["class"], objects["xmin"], objects["ymin"], objects["xmax"], objects["ymax"])
            )
            keys.append(("annotations", int(rows["width"].iloc[0]), int(rows["height"].iloc[0]), tuple(boxes)))
        method = "annotations"
    groups: dict[object, list[str]] = {}
    for name, key in zip(filenames, keys):
        groups.setdefault(key, []).append(name)
    return sorted(groups.values()), method


def _stratify(counts: np.ndarray, sizes: np.ndarray, eval_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Side (0 train, 1 eval) per group. counts: [groups, classes] objects; sizes: images per group."""
    n_groups, n_classes = counts.shape
    ratios = np.array([1.0 - eval_fraction, eval_fraction])
    want_class = np.outer(ratios, counts.sum(axis=0)).astype(float)  # [2, classes] objects still wanted
    want_images = ratios * sizes.sum()
    goal_class = want_class.copy()
    goal_images = want_images.copy()
    side = np.full(n_groups, -1)
    present = counts > 0
    order = rng.permutation(n_groups)

    def fill(g: int, s: int) -> None:
        side[g] = s
        want_class[s] -= counts[g]
        want_images[s] -= sizes[g]

    def ratio(want, goal):
        return np.divide(want, goal, out=np.zeros_like(want), where=goal > 0)

    while True:
        open_groups = side < 0
        remaining = (present & open_groups[:, None]).sum(axis=0)
        labels = np.flatnonzero(remaining)
        if labels.size == 0:
            break
        fewest = labels[remaining[labels] == remaining[labels].min()]
        label = fewest[rng.integers(fewest.size)] if fewest.size > 1 else fewest[0]
        for g in order[present[order, label] & (side[order] < 0)]:
            need = ratio(want_class[:, label], goal_class[:, label])
            if need[0] != need[1]:
                s = int(np.argmax(need))
            else:
                need_img = ratio(want_images, goal_images)
                s = int(np.argmax(need_img)) if need_img[0] != need_img[1] else int(rng.integers(2))
            fill(g, s)
    for g in order:  # object-less groups fill the image quotas
        if side[g] < 0:
            need_img = ratio(want_images, goal_images)
            s = int(np.argmax(need_img)) if need_img[0] != need_img[1] else int(rng.integers(2))
            fill(g, s)
    _repair(side, counts, sizes)
    return side


def _repair(side: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> None:
    """Move groups so each class in >= 2 groups is on both sides and no side is empty."""
    present = counts > 0
    groups_per_class = present.sum(axis=0)
    for _ in range(len(side) * 2):
        per_side = np.stack([present[side == s].sum(axis=0) for s in (0, 1)])
        missing = [(c, s) for c in np.flatnonzero(groups_per_class >= 2) for s in (0, 1) if per_side[s, c] == 0]
        if not missing:
            empty = [s for s in (0, 1) if not (side == s).any()]
            if not empty:
                return
            target, classes_needed = empty[0], None
        else:
            c, target = missing[0]
            classes_needed = c
        source = 1 - target
        best, best_key = None, None
        for g in np.flatnonzero(side == source):
            if classes_needed is not None and not present[g, classes_needed]:
                continue
            # a move must not take a class's last group away from the source side
            if ((per_side[source] - present[g]) == 0)[present[g] & (groups_per_class >= 2)].any():
                continue
            key = (int(counts[g].sum()), int(sizes[g]), int(g))
            if best_key is None or key < best_key:
                best, best_key = g, key
        if best is None:
            return
        side[best] = target


def _side_stats(frame) -> dict:
    objects = frame[frame["class"] != ""]
    images_per_class = objects.groupby("class")["filename"].nunique()
    return {
        "images": int(frame["filename"].nunique()),
        "objects": int(len(objects)),
        "empty_images": int(frame.groupby("filename")["class"].apply(lambda c: (c == "").all()).sum()) if len(frame) else 0,
        "classes": {k: int(v) for k, v in sorted(objects["class"].value_counts().items())},
        "images_per_class": {k: int(v) for k, v in sorted(images_per_class.items())},
    }


def split_csv(
    csv_path: str,
    output_dir: str,
    eval_fraction: float = 0.2,
    seed: int = 0,
    images_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Split a labels CSV by image into OUTPUT_DIR/train.csv and OUTPUT_DIR/eval.csv.

    Args:
        csv_path: Labels CSV written by `odpipe csv` (local or `gs://`).
        output_dir: Folder to write train.csv and eval.csv into.
        eval_fraction: Share of the objects (per class) and images that go to eval, in (0, 1).
        seed: Random seed; the same seed gives the same split.
        images_dir: Folder the CSV's filenames are relative to; when given, byte-identical
            images are kept on one side (SHA-256). Without it, identically annotated images are.
        progress: Show a progress bar while hashing (on stderr, only when it is a terminal).

    Returns:
        {"train": stats, "eval": stats, "groups", "grouped_duplicates", "duplicates_by", "warnings", ...}
    """
    if not 0.0 < float(eval_fraction) < 1.0:
        raise UserError(f"--eval-fraction {eval_fraction}: must be between 0 and 1 (exclusive), e.g. 0.2")
    if int(seed) < 0:
        raise UserError(f"--seed {seed}: must be 0 or more")
    frame = read_labels_csv(str(csv_path))
    storage.make_writable_dir(str(output_dir))  # before hashing the images: a bad -o fails at once
    groups, method = _group_images(frame, str(images_dir) if images_dir else None, progress)
    if len(groups) < 2:
        what = "image(s)" if frame["filename"].nunique() < 2 else "distinct image(s) (the others are duplicates)"
        raise UserError(f"{csv_path}: only {len(groups)} {what}; a train/eval split needs at least 2")
    classes = sorted(c for c in frame["class"].unique() if c)
    class_index = {c: i for i, c in enumerate(classes)}
    group_of = {name: g for g, names in enumerate(groups) for name in names}
    # one more column, "object-less images", so background images are stratified like a class too
    counts = np.zeros((len(groups), len(classes) + 1), dtype=np.int64)
    for name, cls in zip(frame["filename"], frame["class"]):
        counts[group_of[name], class_index[cls] if cls else len(classes)] += 1
    sizes = np.array([len(names) for names in groups], dtype=np.int64)
    rng = np.random.default_rng(seed)
    side = _stratify(counts, sizes, float(eval_fraction), rng)

    eval_names = {name for g, names in enumerate(groups) if side[g] == 1 for name in names}
    is_eval = frame["filename"].isin(eval_names)
    parts = {"train": frame[~is_eval], "eval": frame[is_eval]}
    for name, part in parts.items():
        write_labels_csv(part, storage.join(str(output_dir), f"{name}.csv"))

    warnings = []
    present = counts[:, : len(classes)] > 0
    for c, cls in enumerate(classes):
        n_groups = int(present[:, c].sum())
        on = [int(present[side == s, c].sum()) for s in (0, 1)]
        if n_groups >= 2 and 0 in on:
            warnings.append(f"class {cls!r} could not be put on both sides without emptying another class's side")
        elif n_groups < 2:
            where = "train" if on[0] else "eval"
            warnings.append(f"class {cls!r} is in only one image (group); it is in {where} only")
    summary = {
        "eval_fraction": float(eval_fraction),
        "seed": int(seed),
        "duplicates_by": method,
        "groups": len(groups),
        "grouped_duplicates": int(sum(len(g) for g in groups if len(g) > 1)),
        "train": _side_stats(parts["train"]),
        "eval": _side_stats(parts["eval"]),
        "warnings": warnings,
    }
    return summary


def format_summary(summary: dict) -> str:
    """The per-class table printed by `odpipe split`."""
    train, evl = summary["train"], summary["eval"]
    classes = sorted(set(train["classes"]) | set(evl["classes"]))
    width = max([len(c) for c in classes] + [5])
    lines = [f"{'class':<{width}}  {'train obj/img':>13}  {'eval obj/img':>12}  eval share of objects"]
    for cls in classes:
        to, eo = train["classes"].get(cls, 0), evl["classes"].get(cls, 0)
        ti, ei = train["images_per_class"].get(cls, 0), evl["images_per_class"].get(cls, 0)
        lines.append(f"{cls:<{width}}  {f'{to}/{ti}':>13}  {f'{eo}/{ei}':>12}  {eo / max(to + eo, 1):.1%}")
    total = train["images"] + evl["images"]
    lines.append(
        f"{'images':<{width}}  {train['images']:>13}  {evl['images']:>12}  {evl['images'] / max(total, 1):.1%}"
        f"  (object-less: {train['empty_images']} train, {evl['empty_images']} eval)"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="labels CSV written by `odpipe csv`")
    parser.add_argument("-o", "--output", required=True, help="folder to write train.csv and eval.csv into")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of objects/images for eval (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--images-dir",
        help="folder the CSV's filenames are relative to: byte-identical images are then kept on one side "
        "(without it, only identically annotated images are)",
    )


def run(args: argparse.Namespace) -> int:
    summary = split_csv(args.csv, args.output, eval_fraction=args.eval_fraction, seed=args.seed, images_dir=args.images_dir)
    dup = summary["grouped_duplicates"]
    print(
        f"split {summary['train']['images'] + summary['eval']['images']} images into {args.output}/train.csv and "
        f"{args.output}/eval.csv (seed {summary['seed']}; duplicates by {summary['duplicates_by']}: {dup} images kept together)"
    )
    print(format_summary(summary))
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    return 0
