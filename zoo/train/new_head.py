"""A new class head drawn with the config's own initializers after a restore for another class count."""
from __future__ import annotations

from typing import Any

__all__ = ["reinitialize_new_head"]


def config_initializer(hyperparams: Any, seed: int) -> Any:
    """The Keras initializer a ``conv_hyperparams.initializer`` message names (None when absent)."""
    import keras

    if hyperparams is None or "initializer" not in hyperparams:
        return None
    kind, msg = hyperparams["initializer"].oneof()
    if kind == "random_normal_initializer":
        return keras.initializers.RandomNormal(float(msg.get("mean", 0.0)), float(msg.get("stddev", 1.0)), seed=seed)
    if kind == "truncated_normal_initializer":
        return keras.initializers.TruncatedNormal(float(msg.get("mean", 0.0)), float(msg.get("stddev", 1.0)), seed=seed)
    if kind == "variance_scaling_initializer":
        return keras.initializers.VarianceScaling(
            scale=float(msg.get("factor", 2.0)), mode=str(msg.get("mode", "FAN_IN")).lower(),
            distribution="uniform" if bool(msg.get("uniform", False)) else "truncated_normal", seed=seed)
    return None


def reinitialize_new_head(det: Any, config: Any, *, seed: int = 0) -> list[str]:
    """Give the SSD class-head kernels that the restore re-initialised (another class count) the
    config's own initializer (the box predictor's ``conv_hyperparams``, e.g. normal with stddev 0.01)
    instead of a generic one, as the original builds them; their bias keeps
    ``class_prediction_bias_init``. Faster R-CNN's second-stage box/class heads get the
    ``fc_hyperparams`` initializer, its mask head the ``conv_hyperparams`` one. Returns the keys re-drawn."""
    from ..pipeline_config import model_config

    meta, msg = model_config(config)
    report = getattr(det, "restore_report", None)
    skipped = list(getattr(report, "skipped", None) or [])
    if meta not in ("ssd", "faster_rcnn") or not skipped:
        return []
    _, bp = (msg["box_predictor"] if meta == "ssd" else msg["second_stage_box_predictor"]).oneof()
    conv_init = config_initializer(bp["conv_hyperparams"] if "conv_hyperparams" in bp else None, seed)
    fc_init = config_initializer(bp["fc_hyperparams"] if "fc_hyperparams" in bp else None, seed)
    variables = det.net.checkpoint_map()
    redrawn = []
    for key in skipped:
        variable = variables.get(key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"))
        init = conv_init if meta == "ssd" or "/_third_stage_heads/" in key else fc_init
        if variable is not None and init is not None and key.endswith(("kernel", "pointwise_kernel", "depthwise_kernel")):
            variable.assign(init(tuple(variable.shape), dtype=variable.dtype))
            redrawn.append(key)
    return redrawn
