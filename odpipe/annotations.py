"""labelImg (Pascal VOC XML) annotations -> one labels CSV.

CSV columns, in order: filename,width,height,class,xmin,ymin,xmax,ymax,difficult,truncated.
`filename` is relative to the images folder; an image with no objects is one row with empty
class and box fields. The first eight columns are the classic generate_csv.py format, so CSVs
written by those scripts (without difficult/truncated) are read too.
"""

from __future__ import annotations

import pandas as pd

from odpipe import storage
from odpipe.errors import UserError

CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax", "difficult", "truncated"]
_REQUIRED = CSV_COLUMNS[:8]
_BOX = ["xmin", "ymin", "xmax", "ymax"]


def read_labels_csv(path: str) -> pd.DataFrame:
    """Read a labels CSV (local or `gs://`) with the right types.

    Class names are kept as text exactly ("NA", "null" and "None" are real class names, not
    missing values); empty class means an image without objects. Box columns are floats (NaN
    on object-less rows); width/height ints; difficult/truncated ints (0 when absent).
    """
    try:
        with storage.open_read(path) as f:
            frame = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: CSV not found; check the path") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]}); write it with `odpipe csv`") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: CSV is empty; write it with `odpipe csv`") from None
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: CSV lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)} (write it with `odpipe csv`)"
        )
    for col in ("difficult", "truncated"):
        if col not in frame.columns:
            frame[col] = "0"
    frame = frame[CSV_COLUMNS].copy()
    try:
        for col in ("width", "height"):
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("int64")
        for col in _BOX:
            frame[col] = pd.to_numeric(frame[col].replace("", None), errors="raise").astype("float64")
        for col in ("difficult", "truncated"):
            frame[col] = pd.to_numeric(frame[col].replace("", "0"), errors="raise").astype("int64")
    except (ValueError, TypeError) as err:
        raise UserError(f"{path}: a numeric column holds text ({err}); fix or regenerate the CSV") from None
    has_class = frame["class"] != ""
    has_box = frame[_BOX].notna().all(axis=1)
    bad = frame[has_class != has_box]
    if len(bad):
        row = bad.index[0] + 2
        raise UserError(
            f"{path}: line {row} ({bad.iloc[0]['filename']}) has a class without a box or a box without a class; fix that row"
        )
    return frame
