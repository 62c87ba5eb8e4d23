"""Label maps: the 80 COCO classes (ids 1-90 with gaps) and the 17 COCO person keypoints."""
from __future__ import annotations

import os

COCO_LABELS: dict[int, str] = {
    1: 'person',
    2: 'bicycle',
    3: 'car',
    4: 'motorcycle',
    5: 'airplane',
    6: 'bus',
    7: 'train',
    8: 'truck',
    9: 'boat',
    10: 'traffic light',
    11: 'fire hydrant',
    13: 'stop sign',
    14: 'parking meter',
    15: 'bench',
    16: 'bird',
    17: 'cat',
    18: 'dog',
    19: 'horse',
    20: 'sheep',
    21: 'cow',
    22: 'elephant',
    23: 'bear',
    24: 'zebra',
    25: 'giraffe',
    27: 'backpack',
    28: 'umbrella',
    31: 'handbag',
    32: 'tie',
    33: 'suitcase',
    34: 'frisbee',
    35: 'skis',
    36: 'snowboard',
    37: 'sports ball',
    38: 'kite',
    39: 'baseball bat',
    40: 'baseball glove',
    41: 'skateboard',
    42: 'surfboard',
    43: 'tennis racket',
    44: 'bottle',
    46: 'wine glass',
    47: 'cup',
    48: 'fork',
    49: 'knife',
    50: 'spoon',
    51: 'bowl',
    52: 'banana',
    53: 'apple',
    54: 'sandwich',
    55: 'orange',
    56: 'broccoli',
    57: 'carrot',
    58: 'hot dog',
    59: 'pizza',
    60: 'donut',
    61: 'cake',
    62: 'chair',
    63: 'couch',
    64: 'potted plant',
    65: 'bed',
    67: 'dining table',
    70: 'toilet',
    72: 'tv',
    73: 'laptop',
    74: 'mouse',
    75: 'remote',
    76: 'keyboard',
    77: 'cell phone',
    78: 'microwave',
    79: 'oven',
    80: 'toaster',
    81: 'sink',
    82: 'refrigerator',
    84: 'book',
    85: 'clock',
    86: 'vase',
    87: 'scissors',
    88: 'teddy bear',
    89: 'hair drier',
    90: 'toothbrush',
}

#: Keypoint names in COCO order (the order of the zoo keypoint heads).
PERSON_KEYPOINTS: tuple[str, ...] = (
    'nose',
    'left_eye',
    'right_eye',
    'left_ear',
    'right_ear',
    'left_shoulder',
    'right_shoulder',
    'left_elbow',
    'right_elbow',
    'left_wrist',
    'right_wrist',
    'left_hip',
    'right_hip',
    'left_knee',
    'right_knee',
    'left_ankle',
    'right_ankle',
)

#: Left/right partner of each keypoint (horizontal flips).
PERSON_KEYPOINT_FLIP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

#: COCO evaluation sigmas of the keypoints, in the same order.
PERSON_KEYPOINT_SIGMAS: tuple[float, ...] = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)

#: Skeleton edges drawn between keypoints (indices in COCO order).
PERSON_KEYPOINT_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 7), (7, 9), (6, 8),
    (8, 10), (5, 6), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)



def label_name(class_id: int, labels: dict[int, str] | None = None) -> str:
    """Name of ``class_id`` in ``labels`` (COCO by default); unknown ids read as ``"class_<id>"``."""
    table = COCO_LABELS if labels is None else labels
    return table.get(int(class_id), f"class_{int(class_id)}")


def read_label_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """``{id: name}`` from a ``label_map.pbtxt`` (``item { id: N name: "..." display_name: "..." }``).

    The display name wins over the name when both are given, as in the zoo's label maps.
    Raises :class:`~zoo.errors.ConfigError` naming the file when it cannot be read or an item lacks an id.
    """
    from pathlib import Path

    from .errors import ConfigError
    from .pipeline_config import parse

    path = Path(path)
    try:
        msg = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read the label map {path}: {exc}") from exc
    labels: dict[int, str] = {}
    for item in msg.all("item"):
        ident = item.get("id")
        if ident is None:
            raise ConfigError(f"{path}: an item has no id")
        name = item.get("display_name") or item.get("name") or f"class_{int(ident)}"
        labels[int(ident)] = str(name)
    return labels
