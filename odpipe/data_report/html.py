"""data_report.html: one self-contained page (plots and thumbnails as data URIs)."""

from __future__ import annotations

import html

from odpipe.report import data_uri

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.error{color:#b00}.warning{color:#a60}.ok{color:#080;font-weight:bold}.bad{background:#fde8e8}
li.error,li.warning{margin:4px 0}.tag{font-weight:bold;text-transform:uppercase;font-size:11px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:244px;font-size:11px;word-break:break-all}
.card img{max-width:240px;border:1px solid #ddd}.plots img{max-width:49%;margin:0 0.5% 1em 0;vertical-align:top}
.note{color:#555}
"""
e = html.escape


def _q(d: dict | None, key: str = "median", fmt: str = "{:.0f}") -> str:
    return "–" if not d or d.get(key) is None else fmt.format(d[key])


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _anomalies(anomalies: list[dict]) -> list[str]:
    errors = sum(a["severity"] == "error" for a in anomalies)
    warnings = len(anomalies) - errors
    verdict = ("<span class='ok'>no problem found</span>" if not anomalies else
               f"<span class='{'error' if errors else 'ok'}'>{errors} error(s)</span>, "
               f"<span class='{'warning' if warnings else 'ok'}'>{warnings} warning(s)</span>")
    out = [f"<h2 id='checks'>Checks: {verdict}</h2><ul>"]
    out += [f"<li class='{a['severity']}'><span class='tag'>{a['severity']}</span> [{e(a['check'])}] "
            f"{e(a['message'])}</li>" for a in anomalies]
    return out + ["</ul>"]


def _splits_table(splits: dict) -> list[str]:
    out = ["<h2>Splits</h2><table><tr><th>split</th><th>images</th><th>objects</th><th>empty images</th>"
           "<th>objects / image (mean)</th><th>max</th><th>classes</th><th>boxes no anchor can match</th></tr>"]
    for name, s in splits.items():
        opi = s["objects_per_image"] or {}
        out.append(f"<tr><td>{e(name)}</td><td>{s['images']}</td><td>{s['objects']}</td><td>{s['empty_images']}</td>"
                   f"<td>{opi.get('mean', '–')}</td><td>{opi.get('max', '–')}</td><td>{len(s['classes'])}</td>"
                   f"<td>{s['unmatchable']} ({_pct(s['unmatchable_share'])})</td></tr>")
    return out + ["</table>"]


def _classes_table(splits: dict, model: dict) -> list[str]:
    sides = [s for s in ("train", "eval") if s in splits]
    head = "".join(f"<th>{s} objects</th><th>{s} images</th>" for s in sides)
    out = [f"<h2>Per class</h2><p class='note'>Size = square root of the box area. At input = after resizing the "
           f"image's long side to {model['image_size']} px. Unmatchable = no anchor overlaps the box with IoU ≥ "
           f"{model['match_threshold']} even when centred on it (boxes under ~{model['smallest_matchable_px']:.0f} px "
           "for a square box).</p>",
           f"<table><tr><th>class</th><th>objects</th><th>images</th><th>share</th>{head}<th>size px (median)</th>"
           "<th>relative (median)</th><th>at input p5</th><th>at input median</th><th>unmatchable</th>"
           "<th>aspect w/h (median)</th><th>extreme aspect</th></tr>"]
    for cls, c in splits["all"]["classes"].items():
        cells = "".join(f"<td>{splits[s]['classes'].get(cls, {}).get('objects', 0)}</td>"
                        f"<td>{splits[s]['classes'].get(cls, {}).get('images', 0)}</td>" for s in sides)
        bad = " class='bad'" if c["unmatchable_share"] >= 0.1 else ""
        out.append(f"<tr><td>{e(cls)}</td><td>{c['objects']}</td><td>{c['images']}</td><td>{_pct(c['share'])}</td>"
                   f"{cells}<td>{_q(c['size_px'])}</td><td>{_q(c['size_relative'], fmt='{:.3f}')}</td>"
                   f"<td>{_q(c['size_at_input'], 'p5')}</td><td>{_q(c['size_at_input'])}</td>"
                   f"<td{bad}>{c['unmatchable']} ({_pct(c['unmatchable_share'])})</td>"
                   f"<td>{_q(c['aspect'], fmt='{:.2f}')}</td><td>{c['extreme_aspect']}</td></tr>")
    return out + ["</table>"]


def _images(images: dict | None) -> list[str]:
    if images is None:
        return ["<h2>Images</h2><p class='warning'>Images not available (no --images-dir): formats, colour modes, "
                "EXIF rotation, duplicates and the gallery are not in this report.</p>"]
    fmts = ", ".join(f"{k}: {v}" for k, v in sorted(images["formats"].items())) or "none"
    out = ["<h2>Images</h2><table><tr><th>fact</th><th>images</th></tr>"]
    rows = [("read", images["scanned"]), (f"formats ({e(fmts)})", sum(images["formats"].values())),
            ("grayscale", images["grayscale"]), ("CMYK", images["cmyk"]),
            ("EXIF-rotated (JPEG orientation tag ≠ 1)", len(images["exif_rotated"])),
            ("missing", len(images["missing"])), ("unreadable", len(images["unreadable"])),
            ("damaged (truncated, bad CRC, garbage)", len(images["damaged"])),
            ("stored size ≠ CSV size", len(images["size_mismatch"])),
            ("groups of identical images (SHA-256)", len(images["duplicates"])),
            ("groups of near-identical images (average hash + thumbnail)", len(images["near_duplicates"]))]
    out += [f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows]
    out.append("</table>")
    if images["sizes"]:
        out.append("<p>Most common sizes: " + ", ".join(f"{s['width']}×{s['height']} ({s['images']})"
                                                        for s in images["sizes"]) + "</p>")
    for key, title in (("duplicates", "Identical images"), ("near_duplicates", "Near-identical images")):
        if images[key]:
            out.append(f"<h3>{title}</h3><ul>")
            out += [f"<li>{e(', '.join(g))}</li>" for g in images[key][:30]]
            out.append("</ul>" + (f"<p>… and {len(images[key]) - 30} more groups</p>" if len(images[key]) > 30 else ""))
    return out


def _drift(drift: dict | None, png: bytes | None) -> list[str]:
    if drift is None:
        return ["<h2>Drift</h2><p class='note'>No model in service to compare with (no previous data_stats.json).</p>"]
    prev = drift["previous"]
    out = [f"<h2>Drift against the model in service</h2><p>Compared with the data that trained "
           f"<code>{e(str(prev.get('labels_csv', 'the model in service')))}</code>: images {drift['images_before']} → "
           f"{drift['images_now']} ({100 * drift['images_change']:+.0f}%), objects {drift['objects_before']} → "
           f"{drift['objects_now']}; box-size distance {drift['size_distance']:.2f} ({e(drift['size_distance_kind'])}; "
           f"warned above {drift['size_threshold']}).</p>",
           "<table><tr><th>class</th><th>objects before</th><th>objects now</th><th>share before</th>"
           "<th>share now</th><th>median size at input before</th><th>now</th></tr>"]
    for r in drift["classes"]:
        mark = " class='bad'" if r["class"] in drift["classes_missing"] + drift["shares_moved"] else ""
        out.append(f"<tr{mark}><td>{e(r['class'])}</td><td>{r['objects_before']}</td><td>{r['objects_now']}</td>"
                   f"<td>{_pct(r['share_before'])}</td><td>{_pct(r['share_now'])}</td>"
                   f"<td>{_q({'m': r['median_size_before']}, 'm')}</td><td>{_q({'m': r['median_size_now']}, 'm')}</td></tr>")
    out.append("</table>")
    if png:
        out.append(f"<div class='plots'><img alt='drift' style='max-width:100%' src='{data_uri(png, 'image/png')}'></div>")
    return out


def _gallery(sections: list[tuple[str, list[str]]], thumbs: dict[str, dict]) -> list[str]:
    if not sections:
        return []
    out = ["<h2>Gallery</h2><p class='note'>Every box drawn in its class colour, on the stored pixels.</p>"]
    for title, names in sections:
        out.append(f"<h3>{e(title)}</h3><div class='grid'>")
        for name in names:
            t = thumbs.get(name, {})
            img = f"<img alt='{e(name)}' src='{t['uri']}'>" if t.get("uri") else "<p>(cannot draw)</p>"
            small = f", smallest box {t['smallest']:.0f} px at input" if t.get("smallest") is not None else ""
            out.append(f"<div class='card'>{img}<br>{e(name)}<br>{t.get('objects', 0)} objects{small}</div>")
        out.append("</div>")
    return out


def render(stats: dict, plots: dict[str, bytes], sections, thumbs) -> str:
    """The page: verdict and checks first, then splits, classes, plots, images, drift, gallery."""
    src, model, whole = stats["source"], stats["model"], stats["splits"]["all"]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>odpipe data report</title>",
           f"<style>{_CSS}</style></head><body><h1>odpipe data report</h1>",
           f"<p><code>{e(src['labels_csv'])}</code>" + (f" split in <code>{e(src['splits_dir'])}</code>"
                                                        if src.get("splits_dir") else " (not split)")
           + f": {whole['images']} images, {whole['objects']} objects, {len(whole['classes'])} classes. Model "
           f"<code>{e(model['model'])}</code> at {model['image_size']} px: smallest anchor {model['smallest_anchor_px']:.0f}"
           f" px, anchor aspect ratios {e(', '.join(f'{a:g}' for a in model['aspect_ratios']))}.</p>"]
    out += _anomalies(stats["anomalies"]) + _splits_table(stats["splits"]) + _classes_table(stats["splits"], model)
    out.append("<h2>Plots</h2><div class='plots'>")
    out += [f"<img alt='{e(name)}' src='{data_uri(png, 'image/png')}'>" for name, png in plots.items()
            if name != "drift"]
    out.append("</div>")
    out += _images(stats["images"]) + _drift(stats["drift"], plots.get("drift")) + _gallery(sections, thumbs)
    out.append("</body></html>\n")
    return "\n".join(out)
