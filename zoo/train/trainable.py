"""Which variables train: all, the prediction heads, or glob patterns of variable names."""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArgumentError, UnsupportedModelError

__all__ = ["TRAINABLE_CHOICES", "all_layers", "check_trainable_selection", "head_layers", "select_trainable"]


#: Named choices of ``trainable`` (besides a list of variable-name glob patterns).
TRAINABLE_CHOICES = ("all", "heads")


def check_trainable_selection(trainable: Any, *, as_options: bool = False) -> tuple[str, ...] | str:
    """``trainable`` checked: ``"all"``, ``"heads"`` or a non-empty list of glob patterns of variable
    names (checkpoint keys such as ``model/_box_predictor/*`` or Keras paths). Returns the choice or
    the patterns as a tuple."""
    label = "--trainable" if as_options else "trainable"
    if isinstance(trainable, str):
        if trainable in TRAINABLE_CHOICES:
            return trainable
        raise ArgumentError(f"{label} must be one of {', '.join(TRAINABLE_CHOICES)} or a list of variable-name "
                            f"patterns, got {trainable!r}")
    if isinstance(trainable, Sequence) and trainable and all(isinstance(p, str) and p.strip() for p in trainable):
        return tuple(p.strip() for p in trainable)
    raise ArgumentError(f"{label} must be one of {', '.join(TRAINABLE_CHOICES)} or a non-empty list of "
                        f"variable-name patterns, got {trainable!r}")


def head_layers(net: Any) -> list[Any]:
    """The prediction head layers of a network: SSD's box and class predictor convolutions (the
    few-shot recipe's ``WeightSharedConvolutionalBoxHead`` / ``...ClassHead``, or the per-level
    convolutional heads), CenterNet's head stacks."""
    predictor = getattr(net, "box_predictor", None)
    if predictor is not None:
        boxes = list(getattr(predictor, "box_heads", None) or [predictor.box_head])
        return boxes + list(getattr(predictor, "class_heads", None) or [predictor.class_head])
    if getattr(net, "second_stage_model", None) is not None:  # Faster R-CNN: RPN, box/class (and mask) heads
        masks = list(net.mask_layers) if net.mask_model is not None else []
        return [net.rpn_box_head, net.rpn_class_head, net.box_head, net.class_head, *masks]
    heads = getattr(net, "heads", None)
    if isinstance(heads, Mapping):
        return [layer for stacks in heads.values() for stack in stacks for layer in stack.layers]
    raise UnsupportedModelError(f"{type(net).__name__} has no prediction heads odzoo knows of; "
                                "choose trainable='all' or variable patterns")


def all_layers(model: Any) -> list[Any]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def leaf_layers(model: Any) -> list[Any]:
    return [l for l in all_layers(model) if not list(l._flatten_layers(include_self=False, recursive=False))]


def _variable_names(net: Any) -> dict[int, list[str]]:
    """``{id(variable): [checkpoint key, Keras path]}``."""
    names: dict[int, list[str]] = {}
    for key, variable in net.checkpoint_map().items():
        names.setdefault(id(variable), []).append(key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"))
    for variable in net.keras_model.weights:
        names.setdefault(id(variable), []).append(variable.path)
    return names


def select_trainable(net: Any, trainable: Any = "all", *, freeze_batchnorm: bool = False) -> dict[str, int]:
    """Make exactly the chosen variables of ``net`` trainable (see :func:`check_trainable_selection`).

    BatchNorm layers are frozen (inference mode: moving statistics, no update) when
    ``freeze_batchnorm``, when only the heads train, and when none of their variables is chosen.
    Returns counts: ``trainable`` / ``frozen`` variables (weights of trainable layers) and
    ``frozen_batch_norms``. A pattern list that matches no variable is an :class:`ArgumentError`.
    """
    import keras

    choice = check_trainable_selection(trainable)
    layers = leaf_layers(net.keras_model)
    heads = {id(l) for l in head_layers(net)} if choice == "heads" else set()
    names = _variable_names(net) if isinstance(choice, tuple) else {}
    frozen_bn = 0
    for layer in layers:
        if not layer.weights:
            continue
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        if choice == "all":
            chosen = set() if (is_bn and freeze_batchnorm) else {id(v) for v in layer.weights}
        elif choice == "heads":
            chosen = {id(v) for v in layer.weights} if id(layer) in heads and not is_bn else set()
        else:
            chosen = {id(v) for v in layer.weights
                      if any(fnmatch.fnmatchcase(n, p) for n in names.get(id(v), []) for p in choice)}
            if is_bn and freeze_batchnorm:
                chosen = set()
        layer.trainable = bool(chosen)
        if chosen:
            for v in layer.trainable_weights:
                v.trainable = id(v) in chosen
        frozen_bn += int(is_bn and not chosen)
    variables = net.keras_model.trainable_variables
    if not variables:
        raise ArgumentError(f"trainable={trainable!r} selects no variable of the model; "
                            "check the patterns against its checkpoint keys")
    total = sum(len(l.weights) for l in layers)
    return {"trainable": len(variables), "frozen": total - len(variables), "frozen_batch_norms": frozen_bn}
