"""Label map: class names <-> integer ids, in the TF Object Detection API `.pbtxt` format.

    item {
      id: 1
      name: 'circle'
      display_name: 'circle'
    }

Ids start at 1 (0 is background). `--extend` keeps every id of an existing map and appends new
classes after the highest id, so retraining on new data never renumbers old classes.
"""

from __future__ import annotations

import argparse
import codecs
import re

from odpipe import storage
from odpipe.errors import UserError

# odpipe.annotations (pandas: about 0.3 s) is imported inside `write_label_map`, the one function that
# reads a CSV; every stage imports this module.

_TOKEN = re.compile(
    r"""\s*(?:(?P<comment>\#[^\n]*)|(?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""
    r"""|(?P<punct>[{}:,;])|(?P<word>[A-Za-z_][\w.]*|-?\d+(?:\.\d*)?))""",
    re.S,
)


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(quoted: str) -> str:
    body = quoted[1:-1].encode("utf-8")
    return codecs.escape_decode(body)[0].decode("utf-8")


def format_label_map(label_map: dict[int, str]) -> str:
    """Text of a `.pbtxt` label map for {id: name}, ordered by id."""
    out = []
    for class_id, name in sorted(label_map.items()):
        esc = _escape(name)
        out.append(f"item {{\n  id: {class_id}\n  name: '{esc}'\n  display_name: '{esc}'\n}}\n")
    return "".join(out)


def parse_label_map(text: str, source: str = "<label map>") -> dict[int, str]:
    """{id: name} from `.pbtxt` text. Accepts `name` or only `display_name`, any field order."""
    label_map = _checked_map(_items(_tokens(text, source), source), source)
    if not label_map:
        raise _fail(source, "it holds no items")
    return label_map


def _fail(source: str, problem: str) -> UserError:
    return UserError(f"{source}: {problem}; fix the label map (item {{ id: N name: '...' }})")


def _tokens(text: str, source: str) -> list[str]:
    """The text's tokens, comments and optional separators left out."""
    tokens = []
    pos = 0
    text = text.lstrip("\ufeff")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            line = text.count("\n", 0, pos) + 1
            raise _fail(source, f"cannot parse line {line}")
        pos = m.end()
        if m.group("comment") is None and m.group("punct") not in (",", ";"):  # separators are optional
            tokens.append(m.group(m.lastgroup))
    return tokens


def _skip_block(tokens: list[str], i: int, source: str) -> int:
    """Index after the sub-message opening at tokens[i] == '{' (e.g. keypoints { ... })."""
    depth = 0
    while i < len(tokens):
        depth += {"{": 1, "}": -1}.get(tokens[i], 0)
        i += 1
        if depth == 0:
            return i
    raise _fail(source, "a '{' is not closed with '}'")


def _items(tokens: list[str], source: str) -> list[dict[str, str]]:
    """The fields of each `item { ... }` (sub-messages skipped)."""
    items: list[dict[str, str]] = []
    i = 0
    while i < len(tokens):
        brace = i + 2 if i + 1 < len(tokens) and tokens[i + 1] == ":" else i + 1  # `item: {` == `item {`
        if tokens[i] != "item" or brace >= len(tokens) or tokens[brace] != "{":
            raise _fail(source, f"expected 'item {{' but found {tokens[i]!r}")
        i = brace + 1
        fields: dict[str, str] = {}
        while i < len(tokens) and tokens[i] != "}":
            if i + 1 < len(tokens) and tokens[i + 1] == "{":
                i = _skip_block(tokens, i + 1, source)  # a sub-message such as keypoints { id: 0 label: 'nose' }
                continue
            if i + 2 < len(tokens) and tokens[i + 1] == ":" and tokens[i + 2] == "{":
                i = _skip_block(tokens, i + 2, source)
                continue
            if i + 2 >= len(tokens) or tokens[i + 1] != ":":
                raise _fail(source, f"expected 'field: value' near {tokens[i]!r}")
            key, value = tokens[i], tokens[i + 2]
            if value in ("{", "}", ":"):
                raise _fail(source, f"field {key!r} has no value")
            fields[key] = _unescape(value) if value[:1] in "'\"" else value
            i += 3
        if i >= len(tokens):
            raise _fail(source, "an item is not closed with '}'")
        i += 1
        items.append(fields)
    return items


def _checked_map(items: list[dict[str, str]], source: str) -> dict[int, str]:
    """{id: name} of the items: ids integers >= 1, ids and names each used once."""
    label_map: dict[int, str] = {}
    for fields in items:
        if "id" not in fields:
            raise _fail(source, f"item {fields} has no id")
        try:
            class_id = int(fields["id"])
        except ValueError:
            raise _fail(source, f"id {fields['id']!r} is not an integer") from None
        name = fields.get("name") or fields.get("display_name")
        if not name:
            raise _fail(source, f"item with id {class_id} has neither name nor display_name")
        if class_id < 1:
            raise _fail(source, f"id {class_id} for {name!r} must be >= 1 (0 is reserved for background)")
        if class_id in label_map:
            raise _fail(source, f"id {class_id} is used twice ({label_map[class_id]!r} and {name!r})")
        if name in label_map.values():
            raise _fail(source, f"class {name!r} appears twice")
        label_map[class_id] = name
    return label_map


def num_classes(label_map: dict[int, str]) -> int:
    """The number of classes, in the one meaning odpipe uses everywhere (Model Garden's
    `num_classes`): the highest label id + 1, since id 0 is the background and an extended label
    map may have gaps. `len(label_map)` is the count of named classes, reported as `classes`."""
    return max(label_map) + 1 if label_map else 1


def read_label_map(path: str) -> dict[int, str]:
    """{id: name} from a `.pbtxt` file (local or `gs://`)."""
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise UserError(f"{path}: label map not found; check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: label map is not UTF-8 text; save it as UTF-8") from None
    except IsADirectoryError:
        inside = storage.join(str(path), "label_map.pbtxt")
        hint = f" (e.g. {inside})" if storage.is_file(inside) else ""
        raise UserError(f"{path}: is a folder, not a label map; pass the .pbtxt file{hint}") from None
    return parse_label_map(text, source=str(path))


def build_label_map(classes, existing: dict[int, str] | None = None) -> dict[int, str]:
    """Ids for `classes`: existing ids kept, new classes (sorted by name) after the highest id."""
    label_map = dict(existing or {})
    known = set(label_map.values())
    next_id = max(label_map, default=0) + 1
    for name in sorted(set(classes) - known):
        label_map[next_id] = name
        next_id += 1
    return label_map


def write_label_map(csv_path: str, output_path: str, extend: str | None = None) -> dict[int, str]:
    """Write the label map for the classes in a labels CSV; returns {id: name}."""
    from odpipe.annotations import read_labels_csv

    frame = read_labels_csv(csv_path)
    classes = sorted(c for c in frame["class"].unique() if c)
    existing = read_label_map(extend) if extend else None
    if not classes and not existing:
        raise UserError(f"{csv_path}: no labelled objects, so there is no class to put in a label map")
    label_map = build_label_map(classes, existing)
    storage.write_text(output_path, format_label_map(label_map))
    return label_map


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="labels CSV written by `odpipe csv` (or train.csv)")
    parser.add_argument("-o", "--output", required=True, help="label_map.pbtxt to write")
    parser.add_argument("--extend", help="existing label map whose ids are kept; new classes are appended")


def run(args: argparse.Namespace) -> int:
    existing = read_label_map(args.extend) if args.extend else {}
    label_map = write_label_map(args.csv, args.output, extend=args.extend)
    new = {i: n for i, n in label_map.items() if i not in existing}
    print(f"wrote {args.output}: {len(label_map)} classes ({len(new)} new)")
    for class_id, name in sorted(label_map.items()):
        print(f"  {class_id:>4}  {name}{'  (new)' if class_id in new and existing else ''}")
    return 0
