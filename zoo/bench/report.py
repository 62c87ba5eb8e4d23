"""Benchmark reports: ``results.json``, ``report.md`` and ``speed_accuracy.png``."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
TABLE_HEADER = (
    "| Model | Backend | Size MiB | Device | mAP | Published mAP | Δ mAP | p50 ms | p90 ms | Published ms "
    "| Throughput img/s | Download s | Load s | First call s | Peak RSS MiB | Accel. peak MiB |"
)
#: the order of a model's rows, one per backend
BACKEND_ORDER = ("keras", "saved_model", "tflite", "hub")


def _fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.1f}"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def _peak_rss(rec: dict) -> int | None:
    vals = [_get(rec, "memory", phase, "rss_peak_bytes") for phase in ("load", "inference")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _accel_peak(rec: dict) -> int | None:
    vals = [_get(rec, "memory", phase, "accelerator", "peak_bytes") for phase in ("load", "inference")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def side_by_side(records: Sequence[dict]) -> list[dict]:
    """The records with each model's backends together (an export next to the model it came from),
    models in their first-seen order, backends as :data:`BACKEND_ORDER`."""
    first: dict[str, int] = {}
    for rec in records:
        first.setdefault(str(rec.get("source_model") or rec.get("model")), len(first))

    def key(item: tuple[int, dict]) -> tuple[int, int, int]:
        index, rec = item
        backend = rec.get("backend")
        rank = BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER)
        return first[str(rec.get("source_model") or rec.get("model"))], rank, index

    return [rec for _, rec in sorted(enumerate(records), key=key)]


def table_rows(doc: dict) -> list[str]:
    """One Markdown table row per benchmarked model and backend (failed ones say so)."""
    rows = []
    for rec in side_by_side(doc.get("models", [])):
        backend = rec.get("backend") or "–"
        if "error" in rec:
            err = rec["error"].replace("|", "/").splitlines()[0]
            err = err if len(err) <= 100 else err[:97] + "..."
            rows.append(f"| {rec['model']} | {backend} | failed: {err} |" + " |" * 13)
            continue
        s = rec.get("summary", {})
        pub = rec.get("published", {})
        name = str(rec["model"])
        if rec.get("source_model") and rec["source_model"] != name:
            name += f" (from {rec['source_model']})"
        rows.append(
            "| " + " | ".join([
                name,
                backend,
                _fmt(rec.get("size_bytes"), 1, 1 / MIB),
                str(rec.get("device", "")),
                _fmt(s.get("box_map")),
                _fmt(pub.get("box_map")),
                _signed(s.get("box_map_delta")),
                _fmt(_get(rec, "latency", "p50_ms"), 2),
                _fmt(_get(rec, "latency", "p90_ms"), 2),
                _fmt(pub.get("speed_ms"), 0),
                _fmt(_get(rec, "throughput", "images_per_s"), 1),
                _fmt(_get(rec, "times", "download_s"), 2),
                _fmt(_get(rec, "times", "load_s"), 2),
                _fmt(_get(rec, "times", "first_call_s"), 2),
                _fmt(_peak_rss(rec), 0, 1 / MIB),
                _fmt(_accel_peak(rec), 0, 1 / MIB),
            ]) + " |"
        )
    return rows


def markdown(doc: dict) -> str:
    """The human-readable report."""
    env = doc.get("env", {})
    versions = env.get("versions", {})
    tf_info = env.get("tensorflow", {})
    gpus = ", ".join(g.get("device_name") or g.get("name", "") for g in tf_info.get("gpus", [])) or "none"
    smi = env.get("nvidia_smi") or []
    driver = smi[0]["driver_version"] if smi else None
    proto = doc.get("protocol", {})
    lines = [
        "# odzoo benchmark",
        "",
        f"Run {env.get('timestamp', '?')} on {env.get('hostname', '?')}: "
        f"{_get(env, 'cpu', 'model') or '?'} ({_get(env, 'cpu', 'cores_available') or '?'} cores), GPU: {gpus}"
        + (f" (driver {driver})" if driver else "") + ".",
        f"Python {env.get('python', '?')}, TensorFlow {versions.get('tensorflow')}, Keras {versions.get('keras')}, "
        f"NumPy {versions.get('numpy')}; precision {_get(tf_info, 'precision', 'keras_policy')}"
        f" (TF32 {'on' if _get(tf_info, 'precision', 'tf32') else 'off'}).",
        "",
        "## Results",
        "",
        "mAP is COCO box AP@[.50:.95] in percent; Δ is measured minus published. Latency is wall time per "
        "image at batch 1 after warm-up (published speeds come from the zoo table, hardware not stated). "
        "Size is what the backend loads from disk (checkpoint and config, SavedModel, or .tflite file); "
        "one row per model and backend, an exported model next to the model it came from.",
        "",
        TABLE_HEADER,
        "|" + "---|" * (TABLE_HEADER.count("|") - 1),
        *table_rows(doc),
        "",
    ]
    extra = []
    for rec in doc.get("models", []):
        for iou, label in (("keypoints", "keypoint"), ("segm", "mask")):
            stats = _get(rec, "accuracy", iou, "stats")
            if stats:
                pub = _get(rec, "published", f"{label}_map")
                extra.append(f"- {rec['model']}: {label} AP {100 * stats['AP']:.1f}"
                             + (f" (published {pub:.1f})" if pub is not None else ""))
    if extra:
        lines += ["Keypoint and mask accuracy:", "", *extra, ""]
    lines += ["## Protocol", ""]
    if proto.get("dataset"):
        lines += [
            f"- dataset: `{proto['dataset']}` (images `{proto.get('images_dir')}`), "
            f"split {proto.get('split') or 'unspecified'}, "
            f"{proto.get('image_count')} images",
            f"- score threshold {proto.get('score_threshold')}, "
            f"at most {proto.get('max_detections')} detections per image",
            f"- evaluator {proto.get('evaluator')} {proto.get('evaluator_version')}; model classes mapped to dataset "
            "categories by id when both use COCO ids, by name otherwise",
        ]
    else:
        lines.append("- no dataset given: latency and memory only")
    opts = doc.get("options", {})
    lines += [
        f"- device {proto.get('device')}; latency: {opts.get('warmup')} warm-up calls, then at least "
        f"{opts.get('iterations')} calls and {opts.get('min_duration_s')} s; throughput at batch {opts.get('batch')}",
        "- peak RSS: resident-set high-water mark of load and of inference, reset before each phase on Linux "
        "(otherwise the whole process's); accelerator peak from tf.config.experimental.get_memory_info",
        "",
    ]
    for rec in doc.get("models", []):
        stats = _get(rec, "accuracy", "bbox", "stats")
        if stats:
            lines += [f"### {rec['model']}: the 12 COCO box statistics", "",
                      "| " + " | ".join(stats) + " |", "|" + "---|" * len(stats),
                      "| " + " | ".join(f"{v:.3f}" for v in stats.values()) + " |", ""]
    return "\n".join(lines)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower latency (x) and higher mAP (y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def speed_accuracy_plot(doc: dict, path: str | Path) -> Path:
    """Latency (x) against mAP (y), one labelled point per model, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, points, measured = [], [], []
    several = len({rec.get("backend") for rec in doc.get("models", [])}) > 1
    for rec in doc.get("models", []):
        p50 = _get(rec, "latency", "p50_ms")
        m = _get(rec, "summary", "box_map")
        ap = m if m is not None else _get(rec, "published", "box_map")
        if p50 is None or ap is None:
            continue
        names.append(f"{rec['model']} [{rec.get('backend')}]" if several else rec["model"])
        points.append((float(p50), float(ap)))
        measured.append(m is not None)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    for (x, y), name, is_measured in zip(points, names, measured):
        ax.scatter([x], [y], s=40, color="tab:blue" if is_measured else "white", edgecolors="tab:blue", zorder=3)
        ax.annotate(name + ("" if is_measured else " (published mAP)"), (x, y), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    front = pareto_front(points)
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--o", color="tab:orange",
                markerfacecolor="none", markersize=11, label="Pareto front", zorder=2)
        ax.legend(loc="lower right")
    if not points:
        ax.text(0.5, 0.5, "no model has both a latency and an mAP", ha="center", va="center", transform=ax.transAxes)
    device = _get(doc, "protocol", "device") or "?"
    ax.set_xlabel(f"p50 latency per image, ms (batch 1, {device})")
    ax.set_ylabel("COCO box mAP (%)")
    ax.set_title("Speed / accuracy")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def write_reports(doc: dict, out_dir: str | Path, *, formats: Sequence[str] = ("json", "md", "png")) -> dict[str, Path]:
    """Write the chosen reports into ``out_dir``; returns their paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "json" in formats:
        written["json"] = out / "results.json"
        written["json"].write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    if "md" in formats:
        written["md"] = out / "report.md"
        written["md"].write_text(markdown(doc), encoding="utf-8")
    if "png" in formats:
        written["png"] = speed_accuracy_plot(doc, out / "speed_accuracy.png")
    return written
