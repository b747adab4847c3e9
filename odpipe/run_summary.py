"""The run in a few lines for a pipeline UI: a Markdown summary and the confusion matrix as KFP's
ClassificationMetrics, beside the evaluate task's HTML report.

Vertex AI Pipelines and the Kubeflow UI render a `Markdown` output artifact and draw a
`ClassificationMetrics` artifact's `confusionMatrix` natively; the HTML report stays the full story.
"""

from __future__ import annotations

from typing import Any

# Imported inside functions: kfp only where a Markdown artifact is written.

HEADLINE = (("mAP", "mAP (0.5:0.95)"), ("mAP@0.5", "mAP@0.5"), ("mAP@0.75", "mAP@0.75"), ("recall", "AR@100"))


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _delta(new: Any, old: Any) -> str:
    if not all(isinstance(v, (int, float)) for v in (new, old)):
        return ""
    return f"{new - old:+.4f}"


def confusion_metadata(result: dict) -> dict:
    """The `confusionMatrix` metadata of a KFP ClassificationMetrics artifact (what its
    `log_confusion_matrix` writes) for the confusion matrix of evaluate's metrics.json."""
    from kfp.dsl import ClassificationMetrics

    cm = result["confusion_matrix"]
    metrics = ClassificationMetrics()
    metrics.log_confusion_matrix(list(cm["labels"]), [[int(c) for c in row] for row in cm["matrix"]])
    return dict(metrics.metadata)


def markdown(result: dict, data: dict | None = None, model_home: str = "", fingerprint: str = "") -> str:
    """The run summary: verdict and what is published, the data, challenger vs champion, per class."""
    rival = result.get("champion") or {}
    blessed = bool(result.get("blessed"))
    home = f"`{model_home}`" if model_home else "this run's output (no model home)"
    verdict = (f"**Blessed**: published as the next version of {home}." if blessed
               else "**Not blessed**: nothing published; the model in service stays.")
    data = data or {}
    lines = ["# odpipe run summary", "", verdict, ""]
    lines += [f"- {reason}" for reason in (result.get("blessing") or {}).get("reasons", [])]
    lines += ["", "## Data", "", "| | images | objects |", "|---|---:|---:|",
              f"| evaluated | {result.get('images', 'n/a')} | {result.get('objects', 'n/a')} |"]
    if data:
        lines.append(f"| eval records ({data.get('shards', '?')} shards) | {data.get('images', 'n/a')} | "
                     f"{data.get('objects', 'n/a')} |")
    if result.get("skipped"):
        lines.append(f"\n{len(result['skipped'])} image(s) skipped (see the HTML report).")
    champion = f"champion v{rival['version']}" if rival.get("version") else "champion"
    lines += ["", "## Challenger vs champion (same eval records)", "",
              f"| metric | challenger | {champion if rival else 'champion (none yet)'} | change |", "|---|---:|---:|---:|"]
    for key, name in HEADLINE:
        lines.append(f"| {name} | {_num(result.get(key))} | {_num(rival.get(key))} | {_delta(result.get(key), rival.get(key))} |")
    lines += ["", "## Per class", "", "| class | AP | AP@0.5 | precision@thr | recall@thr | ground truth |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, pc in sorted((result.get("per_class") or {}).items()):
        lines.append(f"| {name} | {_num(pc.get('AP'))} | {_num(pc.get('AP@0.5'))} | {_num(pc.get('precision@threshold'))} "
                     f"| {_num(pc.get('recall@threshold'))} | {pc.get('ground_truth', 'n/a')} |")
    if fingerprint:
        lines += ["", f"Fingerprint `{fingerprint}`."]
    return "\n".join(lines) + "\n"
