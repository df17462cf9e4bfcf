"""Deterministic synthetic face-identity dataset (the embedded default data set, ``fr data synth``).

Hand-written because no library ships an identity-consistent face generator that runs offline on a CPU: faces are
drawn with PIL/numpy. Each identity has stable traits (face shape, skin / hair / eye / lip colour, hair style,
positions and proportions of eyes, brows, nose and mouth, moles, glasses, beard); each image varies nuisance factors
(in-plane rotation, scale, shift, yaw, lighting and colour cast, expression, blur, noise, partial occlusion,
background, JPEG quality). Faces are centred like aligned crops: in a 112 px image the eyes sit near the ArcFace
template positions (38.3, 51.7) and (73.5, 51.5), the mouth corners near y = 92.

Layout written: ``OUT/id_00000/0000.jpg`` ... (the CASIA-WebFace / ImageFolder layout).

Determinism: the traits of identity ``i`` come from ``numpy.random.default_rng([seed, i])`` and image ``j`` of it
from ``default_rng([seed, i, j + 1])``, so files are byte-identical for the same seed whatever the number of
worker processes.
"""
from __future__ import annotations

import io
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from fr_lib.io import atomic_write

SUPERSAMPLE = 2          # faces are drawn at 2x and box-downsampled (anti-aliasing)
BASE = 112.0             # all geometry below is in units of a 112 px crop

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 161), (224, 172, 130), (198, 134, 96),
                       (160, 102, 70), (118, 78, 52), (86, 56, 40)], dtype=float)
HAIR_COLOURS = np.array([(28, 24, 24), (66, 42, 28), (112, 74, 44), (214, 182, 116), (156, 70, 34),
                         (164, 164, 164), (228, 226, 218)], dtype=float)
EYE_COLOURS = np.array([(92, 56, 30), (50, 32, 20), (70, 120, 190), (80, 130, 70), (120, 130, 140),
                        (140, 110, 50)], dtype=float)
FRAME_COLOURS = np.array([(15, 15, 15), (100, 60, 30), (200, 170, 60), (190, 190, 200), (170, 30, 30),
                          (30, 60, 160)], dtype=float)


def _colour(rng, palette, jitter):
    return tuple(np.clip(palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3), 0, 255))


def identity_traits(seed: int, identity: int) -> dict:
    """The stable traits of one identity (geometry in 112-px units, colours as RGB floats)."""
    rng = np.random.default_rng([seed, identity])
    t = {}
    t["skin"] = _colour(rng, SKIN_TONES, 10)
    t["hair"] = (tuple(rng.uniform(40, 230, 3)) if rng.random() < 0.08 else _colour(rng, HAIR_COLOURS, 12))
    t["eye"] = _colour(rng, EYE_COLOURS, 12)
    skin = np.array(t["skin"])
    t["lip"] = tuple(np.clip(skin * rng.uniform(0.55, 0.8) + np.array([60, 0, 10]) * rng.uniform(0.3, 1.0), 0, 255))
    t["face_cx"] = 56.0 + rng.normal(0, 0.8)
    t["face_cy"] = rng.uniform(58, 64)
    t["face_a"] = rng.uniform(32, 42)                 # half-width
    t["face_b"] = rng.uniform(45, 56)                 # half-height
    t["jaw_taper"] = rng.uniform(0.0, 0.4)
    t["eye_half_dist"] = float(np.clip(17.6 + rng.normal(0, 1.8), 13.5, 21.5))
    t["eye_y"] = 51.6 + rng.normal(0, 1.6)
    t["eye_w"] = rng.uniform(6.5, 10.5)               # half-width of the eye white
    t["eye_h"] = rng.uniform(0.38, 0.62)              # height / width
    t["iris"] = rng.uniform(0.38, 0.58)               # iris radius / eye half-width
    t["brow_gap"] = rng.uniform(6.0, 11.0)
    t["brow_thick"] = rng.uniform(1.2, 4.0)
    t["brow_len"] = rng.uniform(10, 17)
    t["brow_slant"] = rng.uniform(-0.25, 0.3)
    t["brow_arch"] = rng.uniform(-1.0, 3.0)
    t["nose_y"] = rng.uniform(67, 77)
    t["nose_w"] = rng.uniform(5, 10)
    t["nose_style"] = int(rng.integers(3))
    t["mouth_y"] = rng.uniform(88, 96)
    t["mouth_w"] = rng.uniform(9.5, 17)
    t["lip_thick"] = rng.uniform(1.8, 5.0)
    t["hair_style"] = int(rng.choice(5, p=[0.1, 0.3, 0.25, 0.15, 0.2]))   # bald, short, fringe, side part, long
    t["hairline"] = rng.uniform(14, 26)
    t["hair_volume"] = rng.uniform(2, 9)
    t["side_drop"] = rng.uniform(42, 60)              # sideburn level, y
    t["part_x"] = rng.uniform(-18, 18)
    t["ear_size"] = rng.uniform(6, 10)
    n_moles = rng.poisson(0.9)
    t["moles"] = [(rng.uniform(-0.7, 0.7), rng.uniform(-0.2, 0.8), rng.uniform(0.9, 2.0)) for _ in range(n_moles)]
    t["freckles"] = rng.random() < 0.15
    t["blush"] = rng.uniform(0, 0.25)
    t["glasses"] = rng.random() < 0.3
    t["glasses_colour"] = _colour(rng, FRAME_COLOURS, 10)
    t["glasses_round"] = rng.random() < 0.5
    t["glasses_thick"] = rng.uniform(1.0, 2.5)
    t["beard"] = rng.random() < 0.18
    t["moustache"] = rng.random() < 0.18
    t["freckle_seed"] = int(rng.integers(2**31))
    return t


def _ellipse(draw, cx, cy, rx, ry, k, **kw):
    draw.ellipse([(cx - rx) * k, (cy - ry) * k, (cx + rx) * k, (cy + ry) * k], **kw)


def _poly(draw, pts, k, **kw):
    draw.polygon([(x * k, y * k) for x, y in pts], **kw)


def _line(draw, pts, k, width, **kw):
    draw.line([(x * k, y * k) for x, y in pts], width=max(1, int(round(width * k))), joint="curve", **kw)


def _rgba(c, a=255):
    return tuple(int(round(v)) for v in c) + (a,)


def _face_outline(t, n=60, grow=0.0):
    ts = np.linspace(0, 2 * np.pi, n, endpoint=False)
    s = np.sin(ts)
    taper = 1 - t["jaw_taper"] * np.clip(s, 0, None) ** 2
    x = t["face_cx"] + (t["face_a"] + grow) * np.cos(ts) * taper
    y = t["face_cy"] + (t["face_b"] + grow) * s
    return list(zip(x, y))


def _draw_face(t: dict, rng, size: int) -> Image.Image:
    """The face (with hair, glasses ...) on a transparent RGBA layer of side size*SUPERSAMPLE, canonical pose."""
    c = size * SUPERSAMPLE
    k = c / BASE
    layer = Image.new("RGBA", (c, c), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    skin, hair = np.array(t["skin"]), np.array(t["hair"])
    cx, cy, a, b = t["face_cx"], t["face_cy"], t["face_a"], t["face_b"]

    # expression and yaw (per image)
    yaw = float(np.clip(rng.normal(0, 0.35), -0.8, 0.8))       # features shift sideways, in 112-px units / 8
    fx = yaw * 5.0
    smile = rng.uniform(-0.3, 1.0)
    mouth_open = rng.uniform(0.2, 1.0) if rng.random() < 0.3 else 0.0
    eye_open = 0.12 if rng.random() < 0.05 else rng.uniform(0.6, 1.05)
    brow_raise = rng.uniform(-1.5, 2.0)
    gaze = rng.normal(0, 0.15, 2)

    if t["hair_style"] == 4:   # long hair behind the face
        v = t["hair_volume"] + 4
        _poly(d, [(cx - a - v, cy - 10), (cx - a - v - 2, 118), (cx + a + v + 2, 118), (cx + a + v, cy - 10)],
              k, fill=_rgba(hair))
        _ellipse(d, cx, cy - 10, a + v, b * 0.85 + v, k, fill=_rgba(hair))
    # ears
    er = t["ear_size"]
    for side in (-1, 1):
        _ellipse(d, cx + side * (a * 0.97) - fx * 0.3, t["eye_y"] + 10, er * 0.55, er, k, fill=_rgba(skin * 0.9))
    # neck and face
    _poly(d, [(cx - a * 0.5, cy + b * 0.6), (cx - a * 0.55, 118), (cx + a * 0.55, 118), (cx + a * 0.5, cy + b * 0.6)],
          k, fill=_rgba(skin * 0.85))
    _poly(d, _face_outline(t), k, fill=_rgba(skin))
    # shading on the side turned away (pose cue)
    if abs(yaw) > 0.15:
        side = -np.sign(yaw)
        shade = Image.new("RGBA", layer.size, (0, 0, 0, 0))
        sd = ImageDraw.Draw(shade)
        _ellipse(sd, cx + side * a * 1.05, cy, a * 0.45, b * 1.05, k, fill=(0, 0, 0, int(60 * min(1, abs(yaw)))))
        mask = Image.new("L", layer.size, 0)
        _poly(ImageDraw.Draw(mask), _face_outline(t), k, fill=255)
        shade.putalpha(Image.composite(shade.getchannel("A"), Image.new("L", layer.size, 0), mask))
        layer.alpha_composite(shade)
        d = ImageDraw.Draw(layer)
    # blush, freckles, moles
    if t["blush"] > 0.05:
        for side in (-1, 1):
            _ellipse(d, cx + side * 22 + fx, 72, 7, 4.5, k,
                     fill=_rgba(skin * (1 - t["blush"]) + np.array([230, 90, 90]) * t["blush"]))
    if t["freckles"]:
        fr = np.random.default_rng(t["freckle_seed"])
        for _ in range(14):
            _ellipse(d, cx + fx + fr.uniform(-24, 24), fr.uniform(62, 76), 0.8, 0.8, k, fill=_rgba(skin * 0.7))
    for mx, my, mr in t["moles"]:
        _ellipse(d, cx + fx + mx * a, cy + my * b * 0.6, mr, mr, k, fill=_rgba(skin * 0.35))

    # eyes and brows
    hd, ey = t["eye_half_dist"], t["eye_y"]
    ew, eh = t["eye_w"], t["eye_w"] * t["eye_h"] * eye_open
    for side in (-1, 1):
        ex = cx + side * hd + fx * (1 + 0.15 * side * np.sign(fx))
        if eh > 1.2:
            _ellipse(d, ex, ey, ew, eh, k, fill=(245, 245, 240, 255))
            ir = ew * t["iris"]
            ix, iy = ex + gaze[0] * ew * 0.4, ey + gaze[1] * eh * 0.3
            _ellipse(d, ix, iy, ir, min(ir, eh * 1.0), k, fill=_rgba(t["eye"]))
            _ellipse(d, ix, iy, ir * 0.45, min(ir * 0.45, eh * 0.6), k, fill=(10, 10, 10, 255))
        _line(d, [(ex - ew, ey), (ex, ey - max(eh, 0.6) * 1.1), (ex + ew, ey)], k, 0.9, fill=_rgba(skin * 0.4))
        by = ey - t["brow_gap"] - brow_raise
        bl, sl = t["brow_len"] / 2, t["brow_slant"] * side
        _line(d, [(ex - bl, by + sl * bl), (ex, by - t["brow_arch"]), (ex + bl, by - sl * bl)], k, t["brow_thick"],
              fill=_rgba(hair * 0.8))
    # nose
    ny, nw = t["nose_y"], t["nose_w"]
    nx = cx + fx * 1.5
    nose_c = _rgba(skin * 0.68)
    if t["nose_style"] == 0:
        _line(d, [(nx - 1.5, ey + 5), (nx - nw * 0.4, ny), (nx, ny + 1.5), (nx + nw * 0.4, ny)], k, 1.1, fill=nose_c)
    elif t["nose_style"] == 1:
        _poly(d, [(nx, ey + 6), (nx - nw * 0.5, ny), (nx + nw * 0.5, ny)], k, fill=_rgba(skin * 0.9))
        _ellipse(d, nx - nw * 0.3, ny - 0.5, 1.4, 1.0, k, fill=nose_c)
        _ellipse(d, nx + nw * 0.3, ny - 0.5, 1.4, 1.0, k, fill=nose_c)
    else:
        _line(d, [(nx + nw * 0.2, ey + 4), (nx + nw * 0.35, ny - 3), (nx, ny + 1), (nx - nw * 0.35, ny - 1)], k, 1.3,
              fill=nose_c)
    # mouth
    my, mw = t["mouth_y"], t["mouth_w"]
    mx = cx + fx * 1.2
    curve = smile * 3.0
    lt = t["lip_thick"]
    if mouth_open > 0:
        _ellipse(d, mx, my + 0.5, mw * 0.75, lt * 0.6 + mouth_open * 3.5, k, fill=(60, 20, 25, 255))
    upper = [(mx - mw, my - curve), (mx - mw * 0.4, my - lt * 0.8), (mx, my - lt * 0.6), (mx + mw * 0.4, my - lt * 0.8),
             (mx + mw, my - curve)]
    lower = [(mx + mw, my - curve), (mx + mw * 0.5, my + lt + mouth_open * 3), (mx, my + lt * 1.1 + mouth_open * 3.5),
             (mx - mw * 0.5, my + lt + mouth_open * 3)]
    if mouth_open > 0:
        _line(d, upper, k, lt * 0.7, fill=_rgba(t["lip"]))
        _line(d, lower + [upper[0]], k, lt * 0.7, fill=_rgba(t["lip"]))
    else:
        _poly(d, upper + lower, k, fill=_rgba(t["lip"]))
        _line(d, [(mx - mw, my - curve), (mx, my + 0.3), (mx + mw, my - curve)], k, 0.7,
              fill=_rgba(np.array(t["lip"]) * 0.6))
    # facial hair
    if t["moustache"]:
        _poly(d, [(mx - mw * 1.05, my - 1), (mx - mw * 0.6, my - lt - 4), (mx + mw * 0.6, my - lt - 4),
                  (mx + mw * 1.05, my - 1), (mx, my - lt - 0.5)], k, fill=_rgba(hair * 0.9))
    if t["beard"]:
        outline = [p for p in _face_outline(t, 80) if p[1] > my - 6]
        outline.sort(key=lambda p: p[0])
        inner = [(mx + mw * 0.9, my + lt + 2), (mx, my + lt + 4), (mx - mw * 0.9, my + lt + 2)]
        _poly(d, outline + inner, k, fill=_rgba(hair * 0.9, 235))
    # hair on top
    style = t["hair_style"]
    if style != 0:
        v = t["hair_volume"]
        ys = min(t["side_drop"], cy + b * 0.3)
        beta = math.asin(np.clip((ys - cy) / (b + v), -1, 1))
        ts = np.linspace(np.pi - beta, 2 * np.pi + beta, 40)
        arc = [(cx + (a + v) * math.cos(u), cy + (b + v) * math.sin(u)) for u in ts]
        hl = t["hairline"] + (10 if style == 2 else 0)
        xs = np.linspace(cx + a * 0.8, cx - a * 0.8, 16)
        if style == 3:
            line = [(x, hl + 6 * math.tanh((x - cx - t["part_x"]) / 8.0) ** 2) for x in xs]
        elif style == 2:
            line = [(x, hl + 1.5 * math.sin(x * 0.9)) for x in xs]
        else:
            line = [(x, hl + 0.002 * (x - cx) ** 2 * 6) for x in xs]
        _poly(d, arc + [(cx + a * 0.85, ys)] + line + [(cx - a * 0.85, ys)], k, fill=_rgba(hair))
    # glasses (sometimes taken off)
    if t["glasses"] and rng.random() < 0.9:
        gc, gt = _rgba(t["glasses_colour"]), t["glasses_thick"]
        gr = ew + 3.5
        centres = []
        for side in (-1, 1):
            ex = cx + side * hd + fx * (1 + 0.15 * side * np.sign(fx))
            centres.append(ex)
            box = [(ex - gr) * k, (ey - gr * 0.75) * k, (ex + gr) * k, (ey + gr * 0.75) * k]
            if t["glasses_round"]:
                d.ellipse(box, outline=gc, width=max(1, int(gt * k)))
            else:
                d.rectangle(box, outline=gc, width=max(1, int(gt * k)))
        _line(d, [(centres[0] + gr, ey - 1), (centres[1] - gr, ey - 1)], k, gt, fill=gc)
    return layer


def _background(rng, c: int) -> Image.Image:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-1, 1, 16)
    proj = (np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]) * 0.5 + 0.5
    img = c1 + (c2 - c1) * proj[..., None]   # a 16 x 16 gradient, upsampled (cheap)
    bg = Image.fromarray(img.astype(np.uint8)).resize((c, c), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(bg)
    for _ in range(rng.integers(0, 5)):   # clutter
        x0, y0 = rng.uniform(0, c, 2)
        w, h = rng.uniform(c * 0.05, c * 0.4, 2)
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=col)
    return bg


def _occlude(img: Image.Image, rng, k: float) -> None:
    d = ImageDraw.Draw(img)
    kind = rng.integers(3)
    col = tuple(int(v) for v in rng.uniform(0, 255, 3))
    if kind == 0:    # a hand / object covering one side or corner
        cx, cy = rng.uniform(10, 102), rng.uniform(60, 110)
        r = rng.uniform(14, 24)
        d.ellipse([(cx - r) * k, (cy - r * 1.2) * k, (cx + r) * k, (cy + r * 1.2) * k], fill=col)
    elif kind == 1:  # scarf / mask on the lower face
        y = rng.uniform(84, 100)
        d.rectangle([0, y * k, 112 * k, 112 * k], fill=col)
    else:            # a bar (sunglasses, microphone, hair strand ...)
        y = rng.uniform(30, 100)
        x0, x1 = sorted(rng.uniform(0, 112, 2))
        d.rectangle([x0 * k, y * k, max(x1, x0 + 20) * k, (y + rng.uniform(5, 12)) * k], fill=col)


def render_face(traits: dict, rng: np.random.Generator, size: int = 112) -> Image.Image:
    """One image (RGB, size x size) of the identity with ``traits``; nuisance factors drawn from ``rng``."""
    c = size * SUPERSAMPLE
    k = c / BASE
    layer = _draw_face(traits, rng, size)
    # pose: in-plane rotation, scale and shift around the eye centre (affine, inverse map for PIL)
    angle = math.radians(float(np.clip(rng.normal(0, 6), -15, 15)))
    scale = rng.uniform(0.92, 1.08)
    tx, ty = np.clip(rng.normal(0, 2.5, 2), -6, 6) * k
    ox, oy = 56 * k, 58 * k
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    inv = (ca, sa, ox - ca * (ox + tx) - sa * (oy + ty), -sa, ca, oy + sa * (ox + tx) - ca * (oy + ty))
    layer = layer.transform((c, c), Image.Transform.AFFINE, inv, resample=Image.Resampling.BILINEAR)
    img = _background(rng, c)
    img.paste(layer, (0, 0), layer)
    if rng.random() < 0.2:
        _occlude(img, rng, k)
    img = img.reduce(SUPERSAMPLE)
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3) * size / BASE))
    # lighting: global gain, a directional gradient, a colour cast; then sensor noise
    x = np.array(img, dtype=np.float32)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
    gain = rng.uniform(0.7, 1.25) * (1 + rng.uniform(0, 0.3) * grad)
    cast = 1 + rng.normal(0, 0.04, 3).astype(np.float32)
    x *= (gain[..., None] * cast).astype(np.float32)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))


def identity_name(i: int) -> str:
    return f"id_{i:05d}"


def image_counts(identities: int, images_per_identity: int, seed: int = 0, imbalanced: bool = False) -> list[int]:
    """Images per identity. ``imbalanced``: CASIA-like long tail, lognormal (sigma 0.9) counts with mean about
    ``images_per_identity``, at least max(2, images_per_identity // 5), at most 10x the mean."""
    if not imbalanced:
        return [images_per_identity] * identities
    rng = np.random.default_rng([seed, 2**31 - 1])
    sigma = 0.9
    raw = images_per_identity * rng.lognormal(-sigma**2 / 2, sigma, identities)
    lo = max(2, images_per_identity // 5)
    return [int(v) for v in np.clip(np.round(raw), lo, 10 * images_per_identity)]


def _write_identity(args) -> int:
    out, i, n, size, seed, quality = args
    traits = identity_traits(seed, i)
    folder = Path(out) / identity_name(i)
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(n):
        rng = np.random.default_rng([seed, i, j + 1])
        img = render_face(traits, rng, size)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(quality - 15, quality + 1)))
        atomic_write(folder / f"{j:04d}.jpg", buf.getvalue())
    return n


def generate_dataset(out, identities: int, images_per_identity: int, size: int = 112, seed: int = 0,
                     imbalanced: bool = False, workers: int | None = None, quality: int = 95,
                     progress: bool = False) -> dict:
    """Write ``identities`` synthetic identities as ``out/id_NNNNN/NNNN.jpg`` (RGB JPEG, size x size px).

    ``images_per_identity`` is the count per identity (the mean when ``imbalanced``). ``workers`` processes
    (default: all CPUs; 0 or 1 = in this process). JPEG quality is drawn per image in [quality-15, quality].
    Returns {'root', 'identities', 'images', 'counts', 'size', 'seed', 'imbalanced', 'seconds'}.
    """
    if identities < 1 or images_per_identity < 1:
        raise ValueError(f"need identities >= 1 and images_per_identity >= 1, got {identities}, {images_per_identity}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = image_counts(identities, images_per_identity, seed, imbalanced)
    jobs = [(str(out), i, n, size, seed, quality) for i, n in enumerate(counts)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = None
    if progress:
        from fr_lib.progress import progress_bar
        bar = progress_bar(total=sum(counts), desc="synth", unit="img")
    if workers <= 1 or identities == 1:
        results = map(_write_identity, jobs)
        for n in results:
            bar and bar.update(n)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for n in pool.map(_write_identity, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                bar and bar.update(n)
    if bar:
        bar.close()
    return {"root": str(out), "identities": identities, "images": int(sum(counts)), "counts": counts, "size": size,
            "seed": seed, "imbalanced": imbalanced, "seconds": time.perf_counter() - t0}


def generate_pack(out, identities: int, images_per_identity: int, size: int = 112, seed: int = 0,
                  imbalanced: bool = False, workers: int | None = None, bin_identities: int | None = None,
                  bin_pairs: int = 600, progress: bool = False) -> dict:
    """The synthetic dataset as an insightface pack: ``out/train.rec``, ``train.idx``, ``property`` holding
    ``identities`` identities (generate_dataset's identities 0 .. identities-1 for the same seed), plus
    ``out/synth.bin``: a verification set of ``bin_pairs`` pairs (fr_lib.data.bin_sets) over ``bin_identities``
    further, held-out identities (default: max(2, identities // 10)), so the CASIA path (pack -> train -> .bin
    verification) runs with no download. Returns generate_dataset's dict plus 'bin' and 'bin_identities'."""
    import shutil
    import tempfile

    from fr_lib.data.bin_sets import write_bin_from_folder
    from fr_lib.data.pack import write_pack
    from fr_lib.data.scan import scan_folder

    held = max(2, identities // 10) if bin_identities is None else bin_identities
    if held < 2:
        raise ValueError(f"the verification set needs >= 2 held-out identities, got bin_identities={held}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".synth-", dir=out) as tmp:
        r = generate_dataset(Path(tmp) / "all", identities + held, images_per_identity, size, seed, imbalanced,
                             workers, progress=progress)
        # the held-out identities are the last ones, so the training identities match generate_dataset's
        (Path(tmp) / "held").mkdir()
        for i in range(identities, identities + held):
            os.rename(Path(tmp) / "all" / identity_name(i), Path(tmp) / "held" / identity_name(i))
        index = scan_folder(Path(tmp) / "all", use_cache=False, verify=False)
        write_pack(index, out, progress=progress)
        bin_path = write_bin_from_folder(Path(tmp) / "held", out / "synth.bin", n_pairs=bin_pairs, seed=seed)
        shutil.rmtree(Path(tmp) / "all")
    r.update(root=str(out), identities=identities, images=len(index), counts=r["counts"][:identities],
             bin=str(bin_path), bin_identities=held)
    return r
