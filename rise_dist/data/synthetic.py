"""The built-in synthetic benchmark: four domains with the two risks RiSe targets, by knob.

Each sample is a rendered face in three modalities (RGB, depth, IR) written into the same cache
format as the real benchmarks (``data/cache.py``), so every later code path is shared. The same
``SyntheticConfig`` (seed included) gives the same bytes.

What is in a sample (docs/synthetic.md has the full account and the measured effect of each knob):

- Nuisance: identity (skin tone, face shape, low-frequency texture), pose jitter per frame,
  background colour. Independent of label and domain.
- Intrinsic liveness cues, per modality, the same in every domain (``intrinsic``): depth relief
  (flat for print/replay/cutout, shallow for masks), IR skin reflectance (screens are dark, paper
  bright, silicone close to skin), RGB recapture artefacts (halftone, moire, low texture, gloss).
- Class asymmetry (``asymmetry``): lives are compact (one appearance distribution, small
  spread); spoofs come in six types with three times the spread: print and replay in every
  domain, and one type exclusive to each domain (C paper_mask, P silicone_mask, S cutout,
  W rigid_mask), so every held-out domain shows an attack its sources never do.
- Camera shift (``camera_shift``): a fixed per-domain sensor model (CAMERAS): colour cast, gain,
  noise and blur in RGB, scale/offset/noise in depth, gain/noise in IR.
- Spurious inter-modal correlation (``spurious``): each modality's background carries a grating
  whose polarity is, per modality, a fair coin. With probability ``spurious`` the three
  polarities are tied to the label: all equal means live in C and P, spoof in S and W
  (SPURIOUS_SIGN). No single modality carries it; only their agreement does. Two of every
  held-out domain's three sources say the opposite of what holds in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rise_dist.config import SyntheticConfig, to_dict
from rise_dist.data.cache import (
    DOMAINS,
    LIVE,
    SPLITS,
    SPOOF,
    ShardWriter,
    read_shard_info,
    write_index,
)
from rise_dist.provenance import code_version, environment

SPOOF_TYPES = ("print", "replay", "paper_mask", "silicone_mask", "cutout", "rigid_mask")
SHARED_TYPES = ("print", "replay")
EXCLUSIVE_TYPE = {"C": "paper_mask", "P": "silicone_mask", "S": "cutout", "W": "rigid_mask"}
# Each domain's attack mix at asymmetry 1 (shares of its spoofs). At asymmetry a the mix is
# (1 - a) * all-print + a * this.
SPOOF_MIX = {
    "C": {"print": 0.40, "replay": 0.30, "paper_mask": 0.30},
    "P": {"print": 0.25, "replay": 0.45, "silicone_mask": 0.30},
    "S": {"print": 0.50, "replay": 0.20, "cutout": 0.30},
    "W": {"print": 0.30, "replay": 0.30, "rigid_mask": 0.40},
}
# +1: agreeing marker polarities mean live; -1: they mean spoof. A 2/2 split, so for any held-out
# domain two of the three sources carry the sign opposite to its own.
SPURIOUS_SIGN = {"C": +1, "P": +1, "S": -1, "W": -1}

# Physical properties of each presentation, as offsets from a live face (scaled by `intrinsic`):
# relief = depth amplitude of the face (live 1), ir = IR reflectance (live 0.55),
# texture = RGB texture contrast (live 1), halftone / moire / gloss = RGB artefact amplitudes.
LIVE_LOOK = {"relief": 1.0, "ir": 0.55, "texture": 1.0, "halftone": 0.0, "moire": 0.0,
             "gloss": 0.0}
SPOOF_LOOK = {
    "print": {"relief": -0.54, "ir": +0.12, "texture": -0.21, "halftone": 0.036},
    "replay": {"relief": -0.54, "ir": -0.21, "texture": -0.09, "moire": 0.042},
    "paper_mask": {"relief": -0.33, "ir": +0.13, "texture": -0.24, "halftone": 0.024},
    "silicone_mask": {"relief": -0.12, "ir": -0.04, "texture": -0.18, "gloss": 0.06},
    "cutout": {"relief": -0.18, "ir": +0.11, "texture": -0.21, "halftone": 0.03},
    "rigid_mask": {"relief": -0.21, "ir": -0.11, "texture": -0.30, "gloss": 0.12},
}
LIVE_SPREAD = 0.06  # per-sample std of a property for lives; spoofs get (1 + 2 * asymmetry)x
SPREAD_SCALE = {"relief": 1.0, "ir": 0.6, "texture": 1.0, "halftone": 0.3, "moire": 0.3,
                "gloss": 0.3}

# Per-domain sensor model at camera_shift 1; camera_shift s interpolates from NEUTRAL_CAMERA.
NEUTRAL_CAMERA = {"cast": (1.0, 1.0, 1.0), "gain": 1.0, "noise": 0.01, "blur": 0.0,
                  "depth_scale": 1.0, "depth_offset": 0.0, "depth_noise": 0.01,
                  "ir_gain": 1.0, "ir_noise": 0.01}
CAMERAS = {
    "C": {"cast": (1.12, 1.0, 0.85), "gain": 1.10, "noise": 0.02, "blur": 0.0,
          "depth_scale": 0.85, "depth_offset": 0.05, "depth_noise": 0.03,
          "ir_gain": 1.15, "ir_noise": 0.02},
    "P": {"cast": (0.92, 1.0, 1.10), "gain": 0.85, "noise": 0.01, "blur": 1.0,
          "depth_scale": 1.10, "depth_offset": -0.05, "depth_noise": 0.02,
          "ir_gain": 0.80, "ir_noise": 0.04},
    "S": {"cast": (1.0, 1.08, 0.95), "gain": 0.95, "noise": 0.025, "blur": 0.5,
          "depth_scale": 0.80, "depth_offset": 0.04, "depth_noise": 0.04,
          "ir_gain": 1.05, "ir_noise": 0.03},
    "W": {"cast": (1.05, 0.95, 1.05), "gain": 1.20, "noise": 0.015, "blur": 0.8,
          "depth_scale": 1.20, "depth_offset": 0.0, "depth_noise": 0.015,
          "ir_gain": 0.90, "ir_noise": 0.015},
}
MARKER_AMPLITUDE = 0.10
MARKER_PERIOD_PX = 8


def _camera(domain: str, shift: float) -> dict:
    cam = {}
    for k, neutral in NEUTRAL_CAMERA.items():
        target = CAMERAS[domain][k]
        if isinstance(neutral, tuple):
            cam[k] = tuple(n + shift * (t - n) for n, t in zip(neutral, target, strict=True))
        else:
            cam[k] = max(0.0, neutral + shift * (target - neutral))
    return cam


def _split_sizes(cfg: SyntheticConfig) -> dict[str, int]:
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}


def _rng(cfg: SyntheticConfig, domain: str, split: str) -> np.random.Generator:
    # Keyed by (seed, domain, split), so each shard is reproducible on its own and in any order.
    return np.random.default_rng([cfg.seed, DOMAINS.index(domain), SPLITS.index(split)])


def _lowfreq(rng: np.random.Generator, n: int, size: tuple[int, int], cells: int) -> np.ndarray:
    """(n, H, W) smooth noise in about [-1, 1]: a cells x cells grid, bilinearly upsampled."""
    h, w = size
    g = rng.uniform(-1, 1, (n, cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    a = g[:, y0][:, :, x0]
    b = g[:, y0][:, :, x0 + 1]
    c = g[:, y0 + 1][:, :, x0]
    d = g[:, y0 + 1][:, :, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes, edge-padded."""
    if sigma < 0.25:
        return x
    r = max(1, math.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return x


def _marker_bits(rng, n: int, live: np.ndarray, sign: int, strength: float) -> np.ndarray:
    """(n, 3) polarities in {-1, +1} for (rgb, depth, ir); each column alone is a fair coin.

    With probability ``strength`` a sample's bits are tied to its label: all equal when
    (live and sign > 0) or (spoof and sign < 0), otherwise one of the six mixed patterns.
    """
    bits = rng.choice([-1, 1], size=(n, 3))
    tied = rng.random(n) < strength
    agree = (live == 1) == (sign > 0)
    s = rng.choice([-1, 1], size=n)
    mixed = np.array([p for p in np.ndindex(2, 2, 2) if len(set(p)) > 1]) * 2 - 1  # (6, 3)
    pick = mixed[rng.integers(0, len(mixed), size=n)]
    tied_bits = np.where(agree[:, None], s[:, None] * np.ones((1, 3), int), pick)
    return np.where(tied[:, None], tied_bits, bits)


def generate(cfg: SyntheticConfig, domain: str, split: str) -> tuple[dict, pd.DataFrame]:
    """Render one (domain, split) in memory.

    Returns ``arrays`` {"rgb": uint8 (n, 3, H, W), "depth": uint8 (n, 1, H, W), "ir": uint8
    (n, 1, H, W)} and an index with the cache's shard columns (label 1 = live, attack type).
    Samples come in videos of ``frames_per_video`` frames sharing identity, attack and scene.
    """
    rng = _rng(cfg, domain, split)
    n = _split_sizes(cfg)[split]
    fpv = cfg.frames_per_video
    n_vid = math.ceil(n / fpv)
    h, w = cfg.size

    # --- per video: label, attack type, identity, scene -------------------------------------
    live_v = (rng.random(n_vid) < cfg.live_fraction).astype(np.int8)
    mix = {t: (1 - cfg.asymmetry) * (t == "print") + cfg.asymmetry * SPOOF_MIX[domain].get(t, 0.0)
           for t in SPOOF_TYPES}
    p = np.array([mix[t] for t in SPOOF_TYPES])
    type_v = np.where(live_v == 1, -1, rng.choice(len(SPOOF_TYPES), size=n_vid, p=p / p.sum()))
    spread_v = np.where(live_v == 1, LIVE_SPREAD, LIVE_SPREAD * (1 + 2 * cfg.asymmetry))
    look = {}
    for prop, base in LIVE_LOOK.items():
        delta = np.array([SPOOF_LOOK[t].get(prop, 0.0) for t in SPOOF_TYPES] + [0.0])[type_v]
        noise = SPREAD_SCALE[prop] * spread_v * rng.standard_normal(n_vid)
        look[prop] = base + cfg.intrinsic * delta + noise
    look["relief"] = np.clip(look["relief"], 0, None)
    look["ir"] = np.clip(look["ir"], 0.02, 1)
    for k in ("halftone", "moire", "gloss"):
        look[k] = np.abs(look[k]) * (type_v >= 0)  # artefacts exist only on presentations
    tone_v = rng.uniform(0.45, 0.95, n_vid)
    rx_v = rng.uniform(0.48, 0.62, n_vid)
    ry_v = rx_v * rng.uniform(1.15, 1.3, n_vid)
    bg_v = rng.uniform(0.1, 0.6, (n_vid, 3))
    tilt_v = rng.normal(0, 0.15, (n_vid, 2)) * (np.abs(look["relief"]) < 0.3)[:, None]
    bits_v = _marker_bits(rng, n_vid, live_v, SPURIOUS_SIGN[domain], cfg.spurious)

    # --- per frame -------------------------------------------------------------------------
    v = np.repeat(np.arange(n_vid), fpv)[:n]
    texture = _lowfreq(rng, n_vid, cfg.size, 5)[v]
    cx = rng.normal(0, 0.05, n)[:, None, None]
    cy = rng.normal(0, 0.05, n)[:, None, None]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    r2 = ((xx - cx) / rx_v[v, None, None]) ** 2 + ((yy - cy) / ry_v[v, None, None]) ** 2
    face = np.clip((1 - r2) * 6, 0, 1)                                   # soft face mask
    dome = np.sqrt(np.clip(1 - r2, 0, 1))                                # hemisphere height
    eye_y = cy - 0.25 * ry_v[v, None, None]
    eyes = sum(np.exp(-(((xx - (cx + s * 0.38 * rx_v[v, None, None])) ** 2
                         + (yy - eye_y) ** 2) / (2 * 0.012))) for s in (-1, 1))
    is_cutout = (type_v[v] == SPOOF_TYPES.index("cutout"))[:, None, None]
    grating = np.sin(2 * np.pi * (xx + yy) * (w / 2) / (MARKER_PERIOD_PX * math.sqrt(2)))
    marker = MARKER_AMPLITUDE * grating[None] * (1 - face)                # (n, H, W), scene
    bits = bits_v[v]
    L = {k: a[v, None, None] for k, a in look.items()}

    # RGB: skin * shading * texture, recapture artefacts, dark eyes, background + marker.
    skin = tone_v[v, None, None, None] * np.array([0.95, 0.72, 0.60])[None, :, None, None]
    shading = (0.65 + 0.35 * dome)[:, None]
    tex = 1 + 0.18 * L["texture"][:, None] * texture[:, None]
    fine = rng.standard_normal((n, 1, h, w))
    halftone = L["halftone"][:, None] * np.sign(np.sin(np.pi * xx * w / 4) * np.sin(np.pi * yy * h / 4) + 1e-9)
    moire = L["moire"][:, None] * np.sin(2 * np.pi * (xx * 0.9 + yy * 0.35) * w / 3.2)
    gloss = L["gloss"][:, None] * np.exp(-((xx - cx + 0.2) ** 2 + (yy - cy + 0.3) ** 2) / 0.05)[:, None]
    rgb_face = skin * shading * tex + 0.03 * L["texture"][:, None] * fine + halftone + moire + gloss
    rgb_face = rgb_face * (1 - 0.6 * eyes[:, None])
    rgb = face[:, None] * rgb_face + (1 - face[:, None]) * bg_v[v, :, None, None]
    rgb = rgb + bits[:, 0, None, None, None] * marker[:, None]

    # Depth: nearer is brighter. Face plane at 0.45, relief adds a dome; flat media may tilt.
    plane = 0.45 + tilt_v[v, 0, None, None] * xx + tilt_v[v, 1, None, None] * yy
    depth = face * (plane + 0.35 * L["relief"] * dome) + 0.08
    depth = depth + bits[:, 1, None, None] * marker

    # IR: reflectance with mild shading; a cutout shows live skin through its eye holes.
    refl = np.where(is_cutout & (eyes > 0.3), LIVE_LOOK["ir"], L["ir"])
    ir = face * refl * (0.75 + 0.25 * dome) * (1 - 0.3 * eyes) + 0.1
    ir = ir + bits[:, 2, None, None] * marker

    # Camera: per-domain sensor model, applied after the scene is formed.
    cam = _camera(domain, cfg.camera_shift)
    rgb = _blur(rgb * np.array(cam["cast"])[None, :, None, None] * cam["gain"], cam["blur"])
    rgb = rgb + cam["noise"] * rng.standard_normal(rgb.shape)
    depth = depth * cam["depth_scale"] + cam["depth_offset"]
    depth = depth + cam["depth_noise"] * rng.standard_normal(depth.shape)
    ir = ir * cam["ir_gain"] + cam["ir_noise"] * rng.standard_normal(ir.shape)

    def u8(x):
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)

    arrays = {"rgb": u8(rgb), "depth": u8(depth)[:, None], "ir": u8(ir)[:, None]}
    attack = np.array(["live"] + list(SPOOF_TYPES))[type_v + 1][v]
    names = [f"{domain}/{split}/v{vi:05d}" for vi in range(n_vid)]
    index = pd.DataFrame({
        "label": np.where(live_v[v] == 1, LIVE, SPOOF).astype(np.int8),
        "video": [names[vi] for vi in v],
        "source": [f"{names[vi]}/f{i % fpv}" for i, vi in enumerate(v)],
        "list_line": np.zeros(n, dtype=np.int64),
        "attack": attack,
    })
    return arrays, index


def summarize(index: pd.DataFrame) -> dict:
    """``{domain: {split: {"live", "spoof", "videos", "missing"}}}`` of a cache index."""
    out: dict = {}
    for (d, s), g in index.groupby(["domain", "split"], sort=False):
        out.setdefault(d, {})[s] = {"live": int((g["label"] == LIVE).sum()),
                                    "spoof": int((g["label"] == SPOOF).sum()),
                                    "videos": int(g["video"].nunique()), "missing": 0}
    order = {d: i for i, d in enumerate(DOMAINS)}
    return {d: {s: out[d][s] for s in SPLITS if s in out[d]}
            for d in sorted(out, key=order.__getitem__)}


def write_synthetic(out, cfg: SyntheticConfig | None = None) -> dict:
    """Write all four domains into a cache at ``out``; returns ``summarize`` of its index.

    A cache already holding this exact config (and complete) is left as it is.
    """
    cfg = cfg or SyntheticConfig()
    out = Path(out)
    want = to_dict(cfg)
    try:
        meta = json.loads((out / "meta.json").read_text())
        if (meta.get("kind") == "synthetic" and meta.get("config") == want
                and all(read_shard_info(out, d, s) for d in DOMAINS for s in SPLITS)):
            return summarize(pd.read_parquet(out / "index.parquet"))
    except (OSError, ValueError):
        pass
    out.mkdir(parents=True, exist_ok=True)
    for d in DOMAINS:
        for s in SPLITS:
            arrays, index = generate(cfg, d, s)
            writer = ShardWriter(out, d, s, n=len(index), size=cfg.size)
            for m, a in arrays.items():
                writer.arrays[m][:] = a
            writer.commit(index, info={"kind": "synthetic", "config": want})
    index = write_index(out, {"kind": "synthetic", "config": want, "code_version": code_version(),
                              "environment": environment()})
    return summarize(index)


def default_cache_root() -> Path:
    """Where ``--data synthetic`` keeps its caches: $RISE_DIST_DATA, else ~/.cache/rise-dist."""
    return Path(os.environ.get("RISE_DIST_DATA", Path.home() / ".cache" / "rise-dist")).expanduser()


def synthetic_cache(cfg: SyntheticConfig, root=None) -> Path:
    """The cache of ``cfg``'s benchmark under ``root``, generated on first use.

    The directory is named by a hash of the config, so every run and every trial with the same
    config shares one copy; a file lock keeps concurrent first uses from writing it twice.
    """
    key = hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    path = Path(root or default_cache_root()) / f"synthetic-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".synthetic-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_synthetic(path, cfg)
    return path
