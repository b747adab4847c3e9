"""The evaluation report: plots as PNG bytes and one self-contained `report.html` (every image is
a base64 data URI, so the file can be mailed, attached to a pipeline run or opened offline)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

# Imported inside the functions that draw: matplotlib (about 0.4 s) and odpipe.predict (PIL drawing,
# about 0.4 s), start-up that `import odpipe.report` should not cost.


def figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def confusion_matrix_png(matrix: np.ndarray, labels: list[str]) -> bytes:
    """Counts as a heat map; rows ground truth, columns predicted, last entry background."""
    n = len(labels)
    size = max(4.0, 0.6 * n + 2.0)
    fig = figure(size, size * 0.85)
    ax = fig.add_subplot()
    # colour by the share of each ground-truth row, so rare classes stay visible
    rows = matrix.sum(axis=1, keepdims=True).astype(float)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (IoU 0.5)")
    if n <= 30:
        for r in range(n):
            for c in range(n):
                ax.text(c, r, str(int(matrix[r, c])), ha="center", va="center",
                        color="white" if share[r, c] > 0.5 else "black", fontsize=8)
    return png_bytes(fig)


def pr_curves_png(curves: dict[str, tuple[list[float], list[float]]]) -> bytes:
    """Precision-recall at IoU 0.5 per class (COCO's interpolated precision at 101 recalls)."""
    fig = figure(6.0, 4.5)
    ax = fig.add_subplot()
    for name, (recall, precision) in curves.items():
        ap = float(np.mean(precision)) if precision else 0.0
        ax.plot(recall, precision, label=f"{name} (AP@0.5 {ap:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall, IoU 0.5")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no class with ground truth", ha="center", va="center")
    return png_bytes(fig)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_data_uri(image, quality: int = 85) -> str:
    """A PIL image as a JPEG data URI (the thumbnails of the evaluation and data reports)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return data_uri(buf.getvalue(), "image/jpeg")


def gallery_entry(image, encoded: bytes, errors: int, score_threshold: float, label_map: dict[int, str],
                  max_side: int = 320) -> dict:
    """A thumbnail of one EvalImage with ground truth (white) and detections >= threshold."""
    from odpipe.predict import draw_detections

    dets = [d for d in image.detections if d.score >= score_threshold]
    gt = [(label_map.get(g.class_id, str(g.class_id)), g.box) for g in image.ground_truth]
    try:
        uri = jpeg_data_uri(draw_detections(encoded, dets, ground_truth=gt, max_side=max_side))
    except Exception:  # noqa: BLE001 - a bad thumbnail must not lose the report
        uri = ""
    return {
        "filename": image.filename,
        "errors": errors,
        "objects": sum(1 for g in image.ground_truth if not g.ignore),
        "detections": len(dets),
        "uri": uri,
    }


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.ok{color:#080;font-weight:bold}.no{color:#b00;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{width:330px;font-size:12px}
.card img{max-width:320px;border:1px solid #ddd}.plots img{max-width:48%;margin-right:1%}
"""


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render_html(metrics: dict, confusion_png: bytes, pr_png: bytes, gallery: list[dict]) -> str:
    """The evaluation report: metrics, per-class table, champion comparison, confusion matrix,
    plots, skipped images and the gallery (worst first), as one self-contained HTML page."""
    out = _summary_html(metrics) + _per_class_html(metrics) + _champion_html(metrics)
    out += _confusion_html(metrics["confusion_matrix"], confusion_png, pr_png)
    if metrics["skipped"]:
        out.append("<h2>Skipped images</h2><ul>")
        out += [f"<li>{html.escape(s['file'])}: {html.escape(s['reason'])}</li>" for s in metrics["skipped"]]
        out.append("</ul>")
    out += _gallery_html(gallery, metrics["confusion_matrix"]["score_threshold"])
    out.append("</div></body></html>\n")
    return "\n".join(out)


def _summary_html(metrics: dict) -> list[str]:
    e = html.escape
    blessed = metrics["blessed"]
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>odpipe evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>odpipe evaluation</h1>",
        f"<p>model <code>{e(metrics['model'])}</code> on <code>{e(', '.join(metrics['data']))}</code>: "
        f"{metrics['images']} images, {metrics['objects']} objects "
        f"({metrics['ignored_objects']} difficult/crowd, ignored), {metrics['detections']} detections, "
        f"{len(metrics['skipped'])} images skipped.</p>",
        f"<p>Blessed: <span class='{'ok' if blessed else 'no'}'>{'yes' if blessed else 'no'}</span> — "
        f"{e('; '.join(metrics['blessing']['reasons']))}</p>",
        "<h2>Metrics (COCO, pycocotools)</h2><table><tr><th>metric</th><th>value</th></tr>",
    ]
    for name, value in metrics["coco"].items():
        out.append(f"<tr><td>{e(name)}</td><td>{_num(value)}</td></tr>")
    return out


def _per_class_html(metrics: dict) -> list[str]:
    e = html.escape
    out = ["</table><h2>Per class</h2><table><tr><th>class</th><th>AP</th><th>AP@0.5</th>"
           "<th>AP@0.75</th><th>recall</th><th>precision@thr</th><th>recall@thr</th><th>objects</th>"
           "<th>detections</th></tr>"]
    for name, pc in metrics["per_class"].items():
        out.append(
            f"<tr><td>{e(name)}</td><td>{_num(pc['AP'])}</td><td>{_num(pc['AP@0.5'])}</td>"
            f"<td>{_num(pc['AP@0.75'])}</td><td>{_num(pc['recall'])}</td>"
            f"<td>{_num(pc.get('precision@threshold'))}</td><td>{_num(pc.get('recall@threshold'))}</td>"
            f"<td>{pc['ground_truth']}</td>"
            f"<td>{pc['detections']}</td></tr>"
        )
    out.append("</table>")
    return out


def _champion_html(metrics: dict) -> list[str]:
    e = html.escape
    champion = metrics.get("champion")
    if not champion:
        return []
    out = [f"<h2>Challenger vs champion (same eval records)</h2><p>champion "
           f"<code>{e(str(champion.get('version') or champion['model']))}</code>"
           + (f"; classes it never saw (AP 0): {e(', '.join(champion['unseen_classes']))}"
              if champion["unseen_classes"] else "") + "</p>"
           "<table><tr><th></th><th>challenger AP</th><th>champion AP</th>"
           "<th>challenger AP@0.5</th><th>champion AP@0.5</th></tr>"]
    out.append(f"<tr><th>all (mAP)</th><td>{_num(metrics['mAP'])}</td><td>{_num(champion['mAP'])}</td>"
               f"<td>{_num(metrics['mAP@0.5'])}</td><td>{_num(champion['mAP@0.5'])}</td></tr>")
    for name, pc in metrics["per_class"].items():
        old = champion["per_class"].get(name, {})
        out.append(f"<tr><td>{e(name)}</td><td>{_num(pc['AP'])}</td><td>{_num(old.get('AP'))}</td>"
                   f"<td>{_num(pc['AP@0.5'])}</td><td>{_num(old.get('AP@0.5'))}</td></tr>")
    out.append("</table>")
    return out


def _confusion_html(cm: dict, confusion_png: bytes, pr_png: bytes) -> list[str]:
    e = html.escape
    out = [f"<h2>Confusion matrix</h2><p>IoU ≥ {cm['iou']}, score ≥ {cm['score_threshold']}; "
           "rows ground truth, columns predicted.</p><table><tr><th></th>"]
    out += [f"<th>{e(label)}</th>" for label in cm["labels"]]
    out.append("</tr>")
    for label, row in zip(cm["labels"], cm["matrix"]):
        out.append(f"<tr><th>{e(label)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
    out.append("</table><div class='plots'>")
    out.append(f"<img alt='confusion matrix' src='{data_uri(confusion_png, 'image/png')}'>")
    out.append(f"<img alt='precision-recall curves' src='{data_uri(pr_png, 'image/png')}'></div>")
    return out


def _gallery_html(gallery: list[dict], score_threshold) -> list[str]:
    e = html.escape
    out = [f"<h2>Eval images, worst first</h2><p>White: ground truth; coloured: detections with "
           f"score ≥ {score_threshold}. Errors = misses + false alarms + wrong classes.</p><div class='grid'>"]
    for item in gallery:
        img = f"<img alt='{e(item['filename'])}' src='{item['uri']}'>" if item["uri"] else "<p>(cannot draw)</p>"
        out.append(
            f"<div class='card'>{img}<br>{e(item['filename'])}<br>{item['errors']} errors, "
            f"{item['objects']} objects, {item['detections']} detections</div>"
        )
    return out
