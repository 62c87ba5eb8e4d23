"""Exporting a model of odzoo; ``zoo.export(model, format=..., quantize=..., out=...)`` is the entry point.

One module per job: :mod:`.exporter` (arguments, the whole export), :mod:`.zoo_layout` (checkpoint,
pipeline.config, label map, SavedModel, tarball, registry entry), :mod:`.tflite_graphs` and
:mod:`.tflite_convert` (the TFLite model), :mod:`.output_folder` (all-or-nothing output),
and :func:`zoo.agreement.measure_agreement` (how closely an export reproduces the in-memory model).
"""
from __future__ import annotations

from ..agreement import at_parity, compare_detections, measure_agreement
from .exporter import FORMATS, Exported, check_export_options, export
from .tflite_convert import QUANTIZATIONS
from .zoo_layout import (
    ExportResult,
    centernet_of,
    config_to_text,
    export_model,
    make_tarball,
    network_of,
    registry_entry,
    updated_config,
    write_checkpoint,
    write_label_map,
    write_registry,
    write_saved_model,
)

__all__ = [
    "FORMATS", "QUANTIZATIONS", "ExportResult", "Exported", "at_parity", "centernet_of", "check_export_options",
    "compare_detections", "config_to_text", "export", "export_model", "make_tarball", "measure_agreement",
    "network_of", "registry_entry", "updated_config", "write_checkpoint", "write_label_map", "write_registry",
    "write_saved_model",
]
