"""The chest: body wall, bones, mediastinum, diaphragm and two lungs, as analytic shapes.

Shapes live in the anatomy frame (mm; x to the patient's left, y posterior, z up from the lung
base, body axis at x = y = 0). Most structures are vertical prisms, so their cross-sections are
computed once as 2-D maps; only the lungs, heart, diaphragm, ribs and discs change with height,
and those are evaluated slice-chunk by slice-chunk inside their own bounding boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ct_pipeline.synth.drawing import axis_mm, draw_tube, lookup
from ct_pipeline.synth.layout import SeriesLayout

HU_AIR = -1000.0
_CHUNK_VOXELS = 4_000_000  # slices per chunk so that a chunk's temporaries stay in cache-sized blocks


@dataclass(frozen=True)
class Lung:
    side: int  # -1 right lung (patient's right, -x), +1 left
    center_x_mm: float  # at the base; the medial edge stays put as the lung narrows upward
    center_y_mm: float
    half_width_mm: float
    half_depth_mm: float
    dome_mm: float  # diaphragm dome height above the costophrenic angle


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest (anatomy-frame mm and HU)."""

    lung_height_mm: float
    body_axes_mm: tuple[float, float]
    fat_mm: float
    cavity_axes_mm: tuple[float, float]
    rib_mm: float
    mediastinum_half_width_mm: float
    lungs: tuple[Lung, Lung]
    heart_center_mm: tuple[float, float, float]
    heart_axes_mm: tuple[float, float, float]
    spine_y_mm: float
    spine_radius_mm: float
    aorta_xyr_mm: tuple[float, float, float]
    aorta_top_mm: float
    trachea_xyr_mm: tuple[float, float, float]
    carina_z_mm: float
    table_y_mm: float
    rib_period_mm: float
    rib_half_height_mm: float
    rib_drop_mm: float
    rib_phase_mm: float
    hu: dict[str, float]


@dataclass(frozen=True, eq=False)
class Phantom:
    """The rendered chest before vessels, nodules and noise.

    Attributes:
        volume_hu: float32, canonical (index, row, col).
        lung_mask: bool, same shape: lung parenchyma.
        anatomy: the shapes it was drawn from.
    """

    volume_hu: np.ndarray
    lung_mask: np.ndarray
    anatomy: Anatomy


def sample_anatomy(rng: np.random.Generator, layout: SeriesLayout) -> Anatomy:
    """Draw a plausible adult chest that fits the layout's field of view."""
    fov_mm = layout.shape_irc[2] * layout.spacing_xyz[0]
    u = rng.uniform
    body_ax = min(u(145.0, 180.0), 0.44 * fov_mm)
    body_ay = body_ax * u(0.62, 0.72)
    scale = body_ax / 165.0
    fat = u(6.0, 22.0) * scale
    wall = u(15.0, 20.0) * scale
    cav_ax, cav_ay = body_ax - fat - wall, body_ay - fat - 0.8 * wall
    spine_r = u(14.0, 18.0) * scale
    spine_y = cav_ay - spine_r - u(0.0, 4.0)
    half_width = u(22.0, 30.0) * scale
    dome = u(30.0, 50.0) * scale
    lungs = []
    for side in (-1, 1):
        lung_half = (cav_ax - half_width) / 2 * u(1.0, 1.1) * (0.95 if side > 0 else 1.0)
        lungs.append(
            Lung(
                side=side,
                center_x_mm=side * (half_width + lung_half),
                center_y_mm=u(-5.0, 8.0),
                half_width_mm=lung_half,
                half_depth_mm=cav_ay * u(1.0, 1.1),
                dome_mm=dome + (u(5.0, 15.0) if side < 0 else 0.0),  # the liver lifts the right dome
            )
        )
    heart_axes = (u(50.0, 62.0) * scale, u(40.0, 52.0) * scale, u(45.0, 58.0) * scale)
    aorta_r = u(10.0, 13.0) * scale
    trachea_r = u(8.0, 10.0) * scale
    height = layout.lung_height_mm
    return Anatomy(
        lung_height_mm=height,
        body_axes_mm=(body_ax, body_ay),
        fat_mm=fat,
        cavity_axes_mm=(cav_ax, cav_ay),
        rib_mm=u(7.0, 10.0) * scale,
        mediastinum_half_width_mm=half_width,
        lungs=(lungs[0], lungs[1]),
        heart_center_mm=(u(8.0, 22.0) * scale, -cav_ay * u(0.25, 0.38), 0.8 * dome + 0.8 * heart_axes[2]),
        heart_axes_mm=heart_axes,
        spine_y_mm=spine_y,
        spine_radius_mm=spine_r,
        aorta_xyr_mm=(spine_r + 0.5 * aorta_r, spine_y - 0.6 * spine_r, aorta_r),
        aorta_top_mm=height * u(0.62, 0.72),
        trachea_xyr_mm=(0.0, spine_y - spine_r - u(8.0, 14.0) - trachea_r, trachea_r),
        carina_z_mm=height * u(0.55, 0.65),
        table_y_mm=body_ay + u(2.0, 8.0),
        rib_period_mm=u(24.0, 30.0) * scale,
        rib_half_height_mm=u(4.0, 5.5) * scale,
        rib_drop_mm=u(25.0, 45.0),
        rib_phase_mm=u(0.0, 30.0),
        hu={
            "fat": u(-110.0, -85.0),
            "muscle": u(35.0, 55.0),
            "blood": u(30.0, 50.0),
            "liver": u(45.0, 65.0),
            "mediastinum": u(-50.0, 0.0),
            "lung": u(-915.0, -885.0),
            "lung_gradient": u(15.0, 40.0),  # dependent (posterior) lung is denser
            "cortical": u(550.0, 800.0),
            "marrow": u(180.0, 280.0),
            "disc": u(70.0, 100.0),
            "table": u(100.0, 250.0),
            "noise_sd": u(20.0, 40.0),
        },
    )


def _lung_profile(lung: Lung, anatomy: Anatomy, z_mm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-height centre x, centre y, half width, half depth (arrays like ``z_mm``; width 0 = no lung)."""
    t = z_mm / anatomy.lung_height_mm
    upper = np.clip((t - 0.45) / 0.55, 0.0, 1.0)
    shrink = np.sqrt(np.clip(1.0 - upper**2, 0.0, 1.0))
    shrink = np.where((t < 0.0) | (t > 1.0), 0.0, shrink)
    half_width = lung.half_width_mm * shrink
    half_depth = lung.half_depth_mm * shrink
    # The apex is a dome over a point a third of the way out from the mediastinum.
    center_x = lung.side * (anatomy.mediastinum_half_width_mm + lung.half_width_mm * (0.35 + 0.65 * shrink))
    center_y = lung.center_y_mm + 15.0 * upper  # apices sit posterior
    return center_x, center_y, half_width, half_depth


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def render_phantom(anatomy: Anatomy, layout: SeriesLayout) -> Phantom:
    """Rasterise the chest onto the canonical grid (float32 HU, no noise) with its lung mask."""
    n_slices, n_rows, n_cols = layout.shape_irc
    hu = anatomy.hu
    x = axis_mm(layout, 2, 0, n_cols)[None, :]
    y = axis_mm(layout, 1, 0, n_rows)[:, None]
    z_all = axis_mm(layout, 0, 0, n_slices)
    (body_ax, body_ay), (cav_ax, cav_ay) = anatomy.body_axes_mm, anatomy.cavity_axes_mm

    # --- 2-D cross-section shared by all slices -------------------------------------------
    e_body = _ellipse(x, y, 0, 0, body_ax, body_ay)
    body = e_body < 1.0
    e_cavity = _ellipse(x, y, 0, 0, cav_ax, cav_ay)
    cavity = e_cavity < 1.0
    base = np.full((n_rows, n_cols), HU_AIR, dtype=np.float32)
    base[body] = hu["fat"]
    base[body & (_ellipse(x, y, 0, 0, body_ax - anatomy.fat_mm, body_ay - anatomy.fat_mm) < 1.0)] = hu["muscle"]
    base[cavity] = hu["mediastinum"]
    table_top = anatomy.table_y_mm
    for top in (table_top, table_top + 25.0):  # two carbon plates of the patient table
        plate = (y >= top) & (y < top + 3.0) & (np.abs(x) < 0.42 * n_cols * layout.spacing_xyz[0])
        base[np.broadcast_to(plate, base.shape)] = hu["table"]

    spine_r, spine_y = anatomy.spine_radius_mm, anatomy.spine_y_mm
    e_vert = _ellipse(x, y, 0, spine_y, spine_r, spine_r * 0.85)
    vertebra = e_vert < 1.0
    base[vertebra] = hu["marrow"]
    base[vertebra & (e_vert > 0.72)] = hu["cortical"]
    canal_y = spine_y + spine_r + 6.0
    e_canal = _ellipse(x, y, 0, canal_y, 7.0, 6.0)
    arch = (_ellipse(x, y, 0, canal_y, 13.0, 11.0) < 1.0) & (y > canal_y - 2.0)
    spinous = _ellipse(x, y, 0, canal_y + 18.0, 4.0, 12.0) < 1.0
    base[body & (arch | spinous)] = hu["cortical"]
    base[e_canal < 1.0] = hu["muscle"] - 25.0  # CSF and cord
    ax_, ay_, ar_ = anatomy.aorta_xyr_mm
    aorta = _ellipse(x, y, ax_, ay_, ar_, ar_) < 1.0
    sternum = _ellipse(x, y, 0, -(cav_ay + 0.4 * (body_ay - anatomy.fat_mm - cav_ay)), 14.0, 6.0) < 1.0

    # Ribs: a shell outside the cavity; each rib descends from the spine toward the front.
    shell = (e_cavity >= 1.0) & (_ellipse(x, y, 0, 0, cav_ax + anatomy.rib_mm, cav_ay + anatomy.rib_mm) < 1.0)
    angle_from_back = np.arctan2(np.abs(x), y)  # 0 behind, pi in front
    shell &= angle_from_back < 0.85 * np.pi  # no ribs at the sternum
    shell_idx = np.flatnonzero(shell)
    shell_drop = (anatomy.rib_drop_mm * (1.0 - np.cos(angle_from_back)) / 2.0).ravel()[shell_idx].astype(np.float32)
    shell_depth = (np.sqrt(np.broadcast_to(e_cavity, shell.shape)).ravel()[shell_idx] - 1.0) * min(cav_ax, cav_ay)
    shell_mid = np.abs(shell_depth / anatomy.rib_mm - 0.5) < 0.25

    # Diaphragm height over each point: domes under both lungs, a plateau under the heart.
    e_base = [
        _ellipse(x, y, lung.center_x_mm, lung.center_y_mm, lung.half_width_mm, lung.half_depth_mm)
        for lung in anatomy.lungs
    ]
    plateau_mm = 0.8 * min(lung.dome_mm for lung in anatomy.lungs)
    plateau = np.where(np.abs(x) < anatomy.mediastinum_half_width_mm + 10.0, plateau_mm, 0.0) * cavity
    domes = [lung.dome_mm * np.clip(1.0 - e, 0.0, 1.0) ** 0.7 for lung, e in zip(anatomy.lungs, e_base)]
    diaphragm = np.maximum.reduce([*domes, plateau]).astype(np.float32)

    # Where each lung may be: inside the cavity, lateral of the mediastinum (narrower in front),
    # clear of spine and aorta.
    front_to_back = np.clip((y + cav_ay) / (2.0 * cav_ay), 0.0, 1.0)
    medial_edge = anatomy.mediastinum_half_width_mm * (0.45 + 0.55 * front_to_back)
    clear = (e_cavity < 0.96) & ~(_ellipse(x, y, ax_, ay_, ar_ + 4.0, ar_ + 4.0) < 1.0)
    clear &= ~((np.abs(x) < spine_r + 8.0) & (y > spine_y - spine_r - 6.0))
    allowed = [clear & (lung.side * x > medial_edge) for lung in anatomy.lungs]
    boxes = [_bbox(a) for a in allowed]
    # One height threshold per pixel: the lung starts above the diaphragm, and never where not allowed.
    floors = [np.where(a, diaphragm, np.float32(np.inf)).astype(np.float32) for a in allowed]
    lung_hu_2d = np.broadcast_to(hu["lung"] + hu["lung_gradient"] * np.clip(y / cav_ay, -1.0, 1.0), base.shape)
    lung_hu_2d = lung_hu_2d.astype(np.float32)
    abdomen_rows, abdomen_cols = _bbox(cavity & (diaphragm > 0))
    abdomen_floor = np.where(cavity, diaphragm, np.float32(-np.inf))[abdomen_rows, abdomen_cols]
    abdomen_top = float(diaphragm.max())

    hx, hy, hz = anatomy.heart_center_mm
    hax, hay, haz = anatomy.heart_axes_mm
    heart_rows, heart_cols = _bbox(_ellipse(x, y, hx, hy, hax * 1.15, hay * 1.15) < 1.0)  # with its fat rim
    heart_in_cavity = cavity[heart_rows, heart_cols][None]

    volume = np.empty(layout.shape_irc, dtype=np.float32)
    lung_mask = np.zeros(layout.shape_irc, dtype=bool)
    chunk = max(1, _CHUNK_VOXELS // (n_rows * n_cols))
    for start in range(0, n_slices, chunk):
        stop = min(start + chunk, n_slices)
        z = z_all[start:stop]
        vol = volume[start:stop]
        vol[:] = base
        if z[0] < abdomen_top:  # liver and spleen under the diaphragm (and everything below the lungs)
            box = vol[:, abdomen_rows, abdomen_cols]
            box[z[:, None, None] < abdomen_floor[None]] = hu["liver"]
        vol[:, aorta] = np.where((z < anatomy.aorta_top_mm)[:, None], hu["blood"], vol[:, aorta])
        in_sternum = (z > 0.25 * anatomy.lung_height_mm) & (z < 1.05 * anatomy.lung_height_mm)
        vol[:, sternum] = np.where(in_sternum[:, None], hu["cortical"], vol[:, sternum])
        disc = ((z - anatomy.rib_phase_mm) % 27.0) < 5.0
        vol[:, vertebra] = np.where(disc[:, None], hu["disc"], vol[:, vertebra])
        phase = np.abs(
            (z[:, None] - shell_drop[None] - anatomy.rib_phase_mm) % anatomy.rib_period_mm - anatomy.rib_period_mm / 2
        )
        rib = phase < anatomy.rib_half_height_mm
        marrow = (phase < 0.5 * anatomy.rib_half_height_mm) & shell_mid[None]
        flat = vol.reshape(len(z), -1)
        flat[:, shell_idx] = np.where(rib, np.where(marrow, hu["marrow"], hu["cortical"]), flat[:, shell_idx])

        # Heart with its fat rim, then the lungs around it.
        heart_rim = None
        if np.any(np.abs(z - hz) < haz * 1.15):
            heart_e = (((x[:, heart_cols] - hx) / hax) ** 2)[None] + (((y[heart_rows] - hy) / hay) ** 2)[None]
            heart_e = heart_e + (((z - hz) / haz) ** 2)[:, None, None]
            heart_rim = heart_e < 1.32
            box = vol[:, heart_rows, heart_cols]
            box[heart_rim & heart_in_cavity] = hu["fat"]
            box[(heart_e < 1.0) & heart_in_cavity] = hu["blood"]
        for lung, floor, (rows, cols) in zip(anatomy.lungs, floors, boxes):
            cx, cy, half_w, half_d = _lung_profile(lung, anatomy, z)
            present = half_w > 1.0
            if not present.any():
                continue
            first, last = int(np.argmax(present)), len(z) - int(np.argmax(present[::-1]))
            zs = slice(first, last)
            ex = ((x[0, cols][None, :] - cx[zs, None]) / half_w[zs, None]) ** 2
            ey = ((y[rows, 0][None, :] - cy[zs, None]) / half_d[zs, None]) ** 2
            inside = (ey[:, :, None] + ex[:, None, :]) < 1.0
            inside &= z[zs, None, None] > floor[rows, cols][None]
            if heart_rim is not None:
                _exclude_box(inside, (rows, cols), heart_rim[zs], (heart_rows, heart_cols))
            np.copyto(vol[zs, rows, cols], lung_hu_2d[rows, cols], where=inside)
            lung_mask[start + first : start + last, rows, cols] = inside
    _draw_airways(volume, layout, anatomy)
    return Phantom(volume_hu=volume, lung_mask=lung_mask, anatomy=anatomy)


def _exclude_box(
    inside: np.ndarray, box: tuple[slice, slice], other: np.ndarray, other_box: tuple[slice, slice]
) -> None:
    """``inside &= ~other`` where the two (rows, cols) boxes of the same image overlap."""
    rows = slice(max(box[0].start, other_box[0].start), min(box[0].stop, other_box[0].stop))
    cols = slice(max(box[1].start, other_box[1].start), min(box[1].stop, other_box[1].stop))
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return
    mine = (
        slice(None),
        slice(rows.start - box[0].start, rows.stop - box[0].start),
        slice(cols.start - box[1].start, cols.stop - box[1].start),
    )
    theirs = (
        slice(None),
        slice(rows.start - other_box[0].start, rows.stop - other_box[0].start),
        slice(cols.start - other_box[1].start, cols.stop - other_box[1].start),
    )
    inside[mine] &= ~other[theirs]


def hilum_mm(anatomy: Anatomy, lung: Lung) -> np.ndarray:
    """Where a lung's bronchus and vessels enter it (anatomy-frame mm)."""
    return np.array(
        [lung.side * (anatomy.mediastinum_half_width_mm + 6.0), lung.center_y_mm + 5.0, 0.5 * anatomy.lung_height_mm]
    )


def _draw_airways(volume: np.ndarray, layout: SeriesLayout, anatomy: Anatomy) -> None:
    """Trachea and the two main bronchi: a soft-tissue wall around an air lumen."""
    tx, ty, tr = anatomy.trachea_xyr_mm
    carina = np.array([tx, ty + 4.0, anatomy.carina_z_mm])
    top = np.array([tx, ty, anatomy.lung_height_mm + 200.0])
    segments = [(top, carina, tr, tr)]
    for lung in anatomy.lungs:
        radius = tr * (0.7 if lung.side < 0 else 0.6)
        segments.append((carina, hilum_mm(anatomy, lung), radius, radius * 0.9))
    for p0, p1, r0, r1 in segments:
        draw_tube(volume, layout, p0, p1, r0 + 1.8, r1 + 1.8, anatomy.hu["muscle"])
    for p0, p1, r0, r1 in segments:
        draw_tube(volume, layout, p0, p1, r0, r1, HU_AIR)


def random_lung_points(
    rng: np.random.Generator, phantom: Phantom, layout: SeriesLayout, n: int, margin_z_mm: float = 0.0
) -> np.ndarray:
    """Up to ``n`` uniform random points (anatomy-frame mm, shape (m, 3)) in the lung mask.

    Points keep ``margin_z_mm`` from the first and last slice. Fewer than ``n`` only when the
    lungs are (almost) outside the scan.
    """
    cav_x, cav_y = phantom.anatomy.cavity_axes_mm
    z_first, z_top = layout.slice_z_range_mm
    z_low = max(0.0, z_first + margin_z_mm)
    z_high = min(phantom.anatomy.lung_height_mm, z_top - margin_z_mm)
    if z_high <= z_low or n <= 0:
        return np.zeros((0, 3))
    found: list[np.ndarray] = []
    count = 0
    for _ in range(20):  # the lungs fill ~40 % of this box: 20 rounds of 3n draws always suffice in practice
        points = np.column_stack(
            [rng.uniform(-cav_x, cav_x, 3 * n), rng.uniform(-cav_y, cav_y, 3 * n), rng.uniform(z_low, z_high, 3 * n)]
        )
        points = points[lookup(phantom.lung_mask, layout, points)]
        found.append(points)
        count += len(points)
        if count >= n:
            break
    return np.vstack(found)[:n]
