"""Painted strokes that colour their whole shape, up to the lines (stroke propagation).

A user paints one stroke inside a shape and expects the whole shape to take its colour, and nothing
beyond the shape's lines to change. The network sees the strokes as hints and colours the picture,
but around a stroke it paints only a blob. ``propagate`` makes the paint exact, the way LazyBrush
(Krita's Colorize Mask) and GIMP's line-art fill do, and keeps the network's colour everywhere the
user has not painted:

1. **Shapes** are the closed regions of the line art, found by trapped-ball segmentation
   (``fills.regions``): a gap in a line up to ``held_gap`` px wide (2 x the ball's radius,
   ``STROKE_GAP`` of the drawing's long side: 8 px at 1024 px, 2 px at 256 px) does not let the
   colour through.
2. **Strokes** are the connected painted pixels of one colour; each has its median colour.
3. A stroke colours the shape that holds most of its pixels off the ink, and any other shape that
   holds at least ``STROKE_MIN_SHARE`` of them: one that crosses a line slightly leaves the
   neighbour alone, one drawn through two shapes colours both. A stroke that lies mostly on the
   ink (a black stroke along an outline) colours no shape: the lines are drawn over the colour
   anyway, and recolouring the lines is not what a stroke does here.
4. **The paper** (the regions that touch the drawing's border) takes a stroke's colour only when
   the stroke is on the paper. A shape whose outline has a gap wider than ``held_gap`` is open to
   the paper; the paper is checked again with a ball ``OPEN_GAP_SCALE`` times larger, and what that
   ball finds closed is carved out of the paper as a shape of its own. So a stroke inside such a
   shape colours the shape, and a stroke on the paper colours the paper but not the open shapes.
5. A shape with strokes of one colour takes it everywhere. A shape with several colours (colour
   boundaries with no line, like a flag's stripes, which no line-based method can see) is split
   between them: each pixel takes the colour of its nearest stroke in the shape, unless the
   network's colour there already lies within ``tolerance`` of one of the shape's stroke colours
   (then that one: the network saw the strokes, and where it agrees with one it drew the boundary).
   With ``tolerance`` above 0 the paint keeps the network's shading: each painted pixel keeps the
   network's colour where that lies within ``tolerance`` (CIE76 ΔE) of its paint, and is moved
   straight towards the paint until it does, elsewhere. 0 paints flat. ΔE here is CIELAB linearised
   at each paint colour (``lab_jacobian``): exact to a small fraction of a unit at a few ΔE, where
   it decides, and a straight line towards the paint is then one in RGB too; it costs a 3 x 3
   product per pixel instead of a colour conversion of a megapixel.
6. Shapes nobody painted keep the network's colour. Ink pixels take the colour of the nearest
   non-ink pixel where that one was painted, so the multiplied lines meet the paint on each side.

Arrays: colour (3, h, w) float in [-1, 1] at any size (the network's flat colour); line (H, W)
uint8 (255 paper, 0 ink) at the drawing's size; the strokes at the region grid
(``fills.region_grid(H, W)``): colour (gh, gw, 3) in [0, 1] and mask (gh, gw) bool, as
``inference.hints_to_arrays`` gives them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .fills import FILL_GAP, FILL_MAX_PIXELS, ink_mask, label_medians, region_grid, regions
from .images import nearest

STROKE_GAP = FILL_GAP  # the flat fills' trapped ball, 1/256 of the long side: gaps up to 2 x radius px hold (8 at 1024)
OPEN_GAP_SCALE = 4  # the second ball, for shapes open to the paper: gaps up to 4 x the held width close there
STROKE_MIN_SHARE = 0.25  # a shape takes a stroke holding at least this share of the stroke's pixels off the ink
STROKE_TOLERANCE = 3.0  # CIE76 ΔE from its paint within which a painted pixel keeps the network's colour
# (0 paints flat; 3 was chosen on OpenMoji val under Hint-AUC, see experiments/RESULTS.md)


def held_gap(height: int, width: int, gap: float = STROKE_GAP) -> int:
    """The widest gap in a line, in px of a ``height`` x ``width`` drawing, that holds a stroke's
    colour in its shape (at the region grid: drawings above ``FILL_MAX_PIXELS`` work scaled down)."""
    grid = region_grid(height, width)
    return int(2 * round(gap * max(grid)) * max(height, width) / max(grid))


def border_labels(labels: np.ndarray) -> np.ndarray:
    """The non-zero labels of ``labels`` (h, w) that touch the image's border: the paper."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(edge[edge > 0])


def stroke_ids(colour: np.ndarray, mask: np.ndarray) -> tuple:
    """Strokes: painted pixels connected (8-neighbours) and of one colour (to 1/255).
    colour (h, w, 3) in [0, 1], mask (h, w) bool -> (ids (N,) in 0..S-1 for the N painted pixels in
    row-major order, S)."""
    components, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    levels = np.rint(colour[mask] * 255).astype(np.int64)  # (N, 3)
    key = components[mask].astype(np.int64) << 24 | levels[:, 0] << 16 | levels[:, 1] << 8 | levels[:, 2]
    _, ids = np.unique(key, return_inverse=True)
    return ids.ravel(), int(ids.max()) + 1 if ids.size else 0


def carve_open_shapes(line: np.ndarray, labels: np.ndarray, count: int, gap: float) -> tuple:
    """Shapes open to the paper (module docstring, item 4): what a ball OPEN_GAP_SCALE times larger
    finds closed is carved out of the paper regions of ``labels`` (h, w) as shapes of their own ->
    (labels, count), labels dense again with 0 on the ink. The larger ball works on the line art
    at half the grid's side (ink kept), where it costs an eighth: its shapes are coarse anyway."""
    paper = border_labels(labels)
    height, width = labels.shape
    coarse = (max(1, height // 2), max(1, width // 2))
    wide, _ = regions(ink_mask(line, coarse), gap * OPEN_GAP_SCALE)
    wide = nearest(wide, (height, width))  # (h, w)
    carve = (wide > 0) & ~np.isin(wide, border_labels(wide)) & np.isin(labels, paper)
    if not carve.any():
        return labels, count
    merged = np.where(carve, count + wide, labels)
    present = np.zeros(int(merged.max()) + 1, bool)
    present[merged] = True
    present[0] = True  # 0 (ink) stays 0
    dense = np.cumsum(present) - 1  # old label -> new label, in order
    return dense[merged].astype(np.int32), int(dense[-1])


@dataclass
class Paint:
    """What ``propagate`` painted, at the region grid (gh, gw)."""

    colour: torch.Tensor  # (3, gh, gw) in [-1, 1]: the paint in the painted shapes, the network's colour elsewhere
    owner: np.ndarray  # (gh, gw) int: the index in ``colours`` of the paint on each pixel, -1 where none
    colours: np.ndarray  # (K, 3) uint8 RGB: the strokes' colours, each once


def propagate(colour: torch.Tensor, line: np.ndarray, stroke_colour: np.ndarray, stroke_mask: np.ndarray,
              gap: float = STROKE_GAP, max_pixels: int = FILL_MAX_PIXELS,
              tolerance: float = STROKE_TOLERANCE) -> torch.Tensor:
    """Each painted stroke colours its shape (module docstring). colour (3, h, w) in [-1, 1] at any
    size; line (H, W) uint8; strokes (gh, gw, 3) in [0, 1] and (gh, gw) bool at
    ``region_grid(H, W, max_pixels)``; tolerance: CIE76 ΔE (item 5) -> (3, gh, gw) in [-1, 1]: the
    paint in the painted shapes, the network's colour elsewhere (``paint(...).colour``)."""
    return paint(colour, line, stroke_colour, stroke_mask, gap, max_pixels, tolerance).colour


def paint(colour: torch.Tensor, line: np.ndarray, stroke_colour: np.ndarray, stroke_mask: np.ndarray,
          gap: float = STROKE_GAP, max_pixels: int = FILL_MAX_PIXELS, tolerance: float = STROKE_TOLERANCE) -> Paint:
    """``propagate``, and which stroke colour painted each pixel (``Paint``)."""
    if not tolerance >= 0:
        raise ValueError(f"the stroke tolerance is a CIE76 ΔE, 0 or more; got {tolerance!r}")
    grid = region_grid(*line.shape, max_pixels)
    if stroke_mask.shape != grid:
        raise ValueError(f"strokes are {stroke_mask.shape} but the region grid of a {line.shape} drawing is {grid}")
    colour = F.interpolate(colour[None].float(), size=grid, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
    unpainted = Paint(colour, np.full(grid, -1, np.int64), np.zeros((0, 3), np.uint8))
    if not stroke_mask.any():
        return unpainted
    ids, strokes = stroke_ids(stroke_colour, stroke_mask)
    paints = label_medians(stroke_colour[stroke_mask] * 2 - 1, ids, strokes - 1)[0]  # (S, 3) in [-1, 1]
    ink = ink_mask(line, grid)
    labels, count = regions(ink, gap)
    if np.isin(labels[stroke_mask], border_labels(labels)).any():  # a stroke on the paper, or in an open shape
        labels, count = carve_open_shapes(line, labels, count, gap)
    takes = taken_shapes(ids, strokes, labels[stroke_mask], count)  # (S, count + 1)
    if not takes.any():
        return unpainted
    levels = np.rint((paints + 1) * 127.5).clip(0, 255).astype(np.uint8)  # (S, 3)
    colours, colour_of = np.unique(levels, axis=0, return_inverse=True)  # each stroke's colour index
    colour_of = colour_of.ravel()
    out = colour.permute(1, 2, 0).numpy().copy()  # (gh, gw, 3)
    network = (out + 1) / 2 if tolerance > 0 else None  # (gh, gw, 3) in [0, 1]: the network's colour
    paint_rgb = colours.astype(np.float32) / 255  # (K, 3) in [0, 1]
    jacobian = lab_jacobian(paint_rgb) if tolerance > 0 else None  # (K, 3, 3)
    owner = np.full(grid, -1, np.int64)
    stroke_map = np.full(grid, -1, np.int64)  # the stroke of each painted pixel, -1 elsewhere
    stroke_map[stroke_mask] = ids
    boxes = ndimage.find_objects(labels)  # boxes[shape - 1]: the shape's bounding box
    for shape in np.nonzero(takes.any(0))[0]:
        mine = np.nonzero(takes[:, shape])[0]  # the strokes this shape takes
        box = boxes[shape - 1]
        inside = labels[box] == shape  # (bh, bw)
        choices = np.unique(colour_of[mine])  # (c,) the colours this shape takes
        pixels = network[box][inside] if tolerance > 0 else None  # (n, 3) the network's colour in it
        if len(choices) == 1:
            nearest = np.full(np.count_nonzero(inside), choices[0])
        else:  # colour boundaries with no line: each pixel takes its nearest stroke's colour
            owners = stroke_map[box]  # (bh, bw)
            seeds = inside & (owners >= 0)
            seeds[seeds] = takes[owners[seeds], shape]  # this shape's strokes, on their pixels in it
            rows, cols = ndimage.distance_transform_edt(~seeds, return_distances=False, return_indices=True)
            nearest = colour_of[owners[rows[inside], cols[inside]]]  # the colour of each pixel's nearest stroke
            if tolerance > 0:  # where the network agrees with one of the shape's colours, that one
                levels = np.rint(pixels * 255).astype(np.int32)  # (n, 3): judged on distinct colours
                seen, back = np.unique(levels[:, 0] << 16 | levels[:, 1] << 8 | levels[:, 2], return_inverse=True)
                rgb = np.stack([seen >> 16, seen >> 8 & 255, seen & 255], -1).astype(np.float32) / 255  # (u, 3)
                offset = rgb[None] - paint_rgb[choices][:, None]  # (c, u, 3)
                far = np.linalg.norm(offset @ jacobian[choices].transpose(0, 2, 1), axis=-1).T  # (u, c) ΔE
                agrees = (far.min(1) < tolerance)[back.ravel()]
                nearest[agrees] = choices[far.argmin(1)][back.ravel()][agrees]
        if tolerance > 0:
            one = len(choices) == 1  # one paint: one matrix, else one per pixel
            out[box][inside] = towards(pixels, paint_rgb[choices[0] if one else nearest],
                                       jacobian[choices[0] if one else nearest], tolerance) * 2 - 1
        else:
            out[box][inside] = paint_rgb[nearest] * 2 - 1
        owner[box][inside] = nearest
    # Ink next to paint takes the paint: the nearest non-ink pixel's colour, where that one was painted.
    if (labels == 0).any():
        rows, cols = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
        from_paint = (labels == 0) & (owner[rows, cols] >= 0)
        out[from_paint] = out[rows[from_paint], cols[from_paint]]
        owner[from_paint] = owner[rows[from_paint], cols[from_paint]]
    return Paint(torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).clamp(-1, 1), owner, colours)


def lab_jacobian(rgb: np.ndarray) -> np.ndarray:
    """d CIELAB / d RGB at each colour of ``rgb`` (K, 3) in [0, 1] -> (K, 3, 3) (Lab rows, RGB
    columns; scikit-image's CIELAB, as the fill rate measures ΔE, by central differences): near a
    colour c, the CIE76 ΔE of x from it is about ||J (x - c)||."""
    from skimage.color import rgb2lab

    step = 1e-3
    probes = np.repeat(np.asarray(rgb, np.float64)[:, None], 6, axis=1)  # (K, 6, 3): +-step on each channel
    for channel in range(3):
        probes[:, 2 * channel, channel] += step
        probes[:, 2 * channel + 1, channel] -= step
    labs = rgb2lab(probes.reshape(-1, 1, 3)).reshape(-1, 6, 3)
    return ((labs[:, 0::2] - labs[:, 1::2]) / (2 * step)).transpose(0, 2, 1).astype(np.float32)


def towards(rgb: np.ndarray, paint_rgb: np.ndarray, jacobian: np.ndarray, tolerance: float) -> np.ndarray:
    """Each colour of ``rgb`` (n, 3) in [0, 1], moved straight towards its paint ``paint_rgb`` ((n, 3)
    or one (3,)) until it lies within ``tolerance`` (CIE76 ΔE, linearised at the paint by
    ``jacobian``, (n, 3, 3) or one (3, 3)) of it; colours already within it stay as they are ->
    (n, 3) in [0, 1]."""
    offset = rgb - paint_rgb  # (n, 3)
    if jacobian.ndim == 2:
        lab_offset = offset @ jacobian.T
    else:  # one matrix per pixel: torch's batched product, several times numpy's einsum here
        lab_offset = torch.bmm(torch.from_numpy(jacobian), torch.from_numpy(offset)[:, :, None])[..., 0].numpy()
    distance = np.linalg.norm(lab_offset, axis=-1)  # (n,)
    return paint_rgb + offset * np.minimum(1, tolerance / np.maximum(distance, 1e-9))[:, None]


def taken_shapes(ids: np.ndarray, strokes: int, under: np.ndarray, count: int) -> np.ndarray:
    """Which shapes each stroke colours (module docstring, item 3). ids (N,) the stroke of each
    painted pixel, under (N,) the shape under it (0 on ink) -> (strokes, count + 1) bool; column 0
    (the ink) is never taken."""
    if count == 0:  # all ink (a drawing of a pixel or two): no shape to take
        return np.zeros((strokes, 1), bool)
    counts = np.bincount(ids * (count + 1) + under, minlength=strokes * (count + 1)).reshape(strokes, count + 1)
    off_ink = counts[:, 1:].sum(1)  # (S,)
    takes = counts >= np.maximum(STROKE_MIN_SHARE * off_ink, 1)[:, None]
    takes[np.arange(strokes), 1 + counts[:, 1:].argmax(1)] = True
    takes[:, 0] = False
    takes &= (off_ink > counts[:, 0])[:, None]  # mostly on the ink: a stroke along a line colours no shape
    return takes
