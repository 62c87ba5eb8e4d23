"""Instance masks: box-relative mask predictions (Mask R-CNN's ``detection_masks``) -> image masks.

The zoo's exporter pastes each ``[h, w]`` box mask into the image by mapping the whole image into the
box's frame and resampling the mask there with ``tf.image.crop_and_resize`` (bilinear, 0 outside the
mask). That op is *corner aligned*: image row ``i`` of ``H`` sits at ``i / (H - 1)`` of the image and
mask row ``k`` of ``h`` at ``k / (h - 1)`` of the box, so the box's edges pass through the centres of
the mask's outer cells. :func:`reframe_box_masks` evaluates exactly that arithmetic (float32, in the
op's order of operations), so its masks equal the exported model's to the bit.
"""
from __future__ import annotations

import numpy as np

_MIN_BOX_SIZE = np.float32(1e-4)  # the exporter floors box sizes at this before dividing by them


def reframe_box_masks(masks: np.ndarray, boxes_normalized: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Paste ``[N, h, w]`` masks predicted inside each box into ``[N, H, W]`` image-sized masks.

    ``boxes_normalized`` are ``(ymin, xmin, ymax, xmax)`` in [0, 1] of the image. Each mask is
    resampled bilinearly over its box, corner aligned as the zoo's exporter does (values stay
    probabilities); pixels whose position falls outside the mask are 0.
    """
    height, width = int(image_size[0]), int(image_size[1])
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes_normalized, np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"expected [N, h, w] masks for {boxes.shape[0]} boxes, got shape {masks.shape}")
    out = np.zeros((boxes.shape[0], height, width), np.float32)
    for mask, (y0, x0, y1, x1), image_mask in zip(masks, boxes, out):
        rows, top, bottom, y_lerp = _sample_positions(y0, y1, mask.shape[0], height)
        cols, left, right, x_lerp = _sample_positions(x0, x1, mask.shape[1], width)
        if rows.size == 0 or cols.size == 0:
            continue
        x_lerp = x_lerp[np.newaxis, :]
        upper = mask[np.ix_(top, left)] + (mask[np.ix_(top, right)] - mask[np.ix_(top, left)]) * x_lerp
        lower = mask[np.ix_(bottom, left)] + (mask[np.ix_(bottom, right)] - mask[np.ix_(bottom, left)]) * x_lerp
        image_mask[np.ix_(rows, cols)] = upper + (lower - upper) * y_lerp[:, np.newaxis]
    return out


def _sample_positions(
    low: np.float32, high: np.float32, mask_size: int, image_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis: the image indices that land on the mask, their two mask neighbours and the weight.

    The image's extent ``[0, 1]`` expressed in the box's frame is ``[-low, 1 - low] / (high - low)``;
    image index ``i`` then samples the mask at ``start + i * step`` (mask cells), all in float32.
    """
    f32 = np.float32
    extent = np.maximum(high - low, _MIN_BOX_SIZE)
    start_frac = (f32(0.0) - low) / extent
    end_frac = (f32(1.0) - low) / extent
    last = f32(mask_size - 1)
    index = np.arange(image_size, dtype=np.float32)
    if image_size > 1:
        step = (end_frac - start_frac) * last / f32(image_size - 1)
        position = start_frac * last + index * step
    else:  # a single sample is taken at the centre (computed in double, as the op does)
        position = np.full(1, 0.5 * (float(start_frac) + float(end_frac)) * (mask_size - 1), np.float32)
    inside = np.flatnonzero((position >= 0) & (position <= last))
    position = position[inside]
    lower = np.floor(position)
    return inside, lower.astype(np.intp), np.ceil(position).astype(np.intp), (position - lower).astype(np.float32)
