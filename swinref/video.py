"""Classify video clips: decode with PyAV, sample and preprocess as the official Video Swin evaluation does.

The official test pipeline (Video-Swin-Transformer and mmaction2 1.x configs/recognition/swin, Kinetics-400,
e.g. swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py):

    SampleFrames(clip_len=32, frame_interval=2, num_clips=4, test_mode=True)   4 clips of 32 frames, every 2nd
    Resize(scale=(-1, 224))                        shorter side to 224, bilinear (cv2 INTER_LINEAR), keep aspect
    ThreeCrop(crop_size=224)                       3 crops along the longer side: 4 x 3 = 12 views
    data_preprocessor mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375) on 0..255 RGB, NCTHW
    I3DHead(average_clips='prob')                  the mean of the 12 views' softmax

Test-mode sampling (mmaction SampleFrames._get_test_clips): a clip spans (32 - 1) * 2 + 1 = 63 frames; the
clip starts are round(k * max(total - 63, 0) / 3) for k = 0..3; frame indices past the end wrap around ('loop').
torchvision's swin3d weights document another recipe (15 fps, 12 clips of 32 frames, short side 256 with
antialiasing, centre crop 224, mean/std on [0, 1]); swinref follows the official one.

PyAV is optional (`pip install swinref[video]`); NumPy does the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any, Iterable, Iterator

import numpy as np

from swinref.errors import InputError

__all__ = ["VideoPipeline", "OFFICIAL", "VIDEO_SUFFIXES", "is_clip", "read_frames", "sample_indices", "resize_shorter", "three_crop", "views",
           "kinetics400_classes", "predict_clips"]


@dataclasses.dataclass(frozen=True)
class VideoPipeline:
    """The evaluation sampling and preprocessing (names as in mmaction2's configs)."""

    clip_len: int = 32
    frame_interval: int = 2
    num_clips: int = 4
    short_side: int = 224
    crop_size: int = 224
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # 0..255 RGB
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)


OFFICIAL = VideoPipeline()
# What `swinref predict` treats as clips (every argument must be one): the containers FFmpeg reads that hold video.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                            ".ts", ".ogv"})


def is_clip(path: str | os.PathLike) -> bool:
    """Whether a file name has a video suffix (the predict command's choice between images and clips)."""
    return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Every frame of the file's first video stream as RGB uint8 [N, H, W, 3] (PyAV)."""
    try:
        import av
    except ImportError:
        raise InputError("reading video needs PyAV: pip install 'swinref[video]' (or pip install av)") from None
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"clip {str(path)!r} does not exist or is not a file; check the path")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except InputError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot decode {path}: {exc}; is it a video file?") from None
    if not frames:
        raise InputError(f"{path} has a video stream without decodable frames")
    return np.stack(frames)


def sample_indices(total: int, pipeline: VideoPipeline = OFFICIAL) -> np.ndarray:
    """[num_clips, clip_len] frame indices, mmaction2's SampleFrames in test mode (out of bounds: 'loop')."""
    if total < 1:
        raise InputError("a clip needs at least one frame")
    span = (pipeline.clip_len - 1) * pipeline.frame_interval + 1
    max_offset = max(total - span, 0)
    if pipeline.num_clips > 1:
        starts = np.round(np.arange(pipeline.num_clips) * (max_offset / float(pipeline.num_clips - 1)))
    else:
        starts = np.array([max_offset // 2])
    inds = starts[:, None].astype(np.int64) + np.arange(pipeline.clip_len)[None, :] * pipeline.frame_interval
    return np.mod(inds, total)


def _linear_taps(n_in: int, n_out: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR along one axis: for each output pixel its two source pixels (clamped to the border) and
    their fixed-point weights (11 fractional bits, summing to 2048), from a float32 position with half-pixel
    centres. Along columns cv2 also sets the weight to the border pixel alone; along rows it keeps the unclamped
    weights on the replicated border row (which its vectorised rounding can tell apart)."""
    pos = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = pos - first.astype(np.float32)
    if clamp_weights:
        frac[(first < 0) | (first >= n_in - 1)] = 0.0
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(2048.0)).astype(np.int64)
    return np.clip(first, 0, n_in - 1), np.clip(first + 1, 0, n_in - 1), np.stack([w0, 2048 - w0])


def resize_shorter(frames: np.ndarray, short: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> the shorter side `short`, the longer int(side * scale + 0.5) (mmcv.rescale_size), as
    mmcv.imresize = cv2.resize(INTER_LINEAR) computes it on uint8: columns, then rows with cv2's vectorised
    fixed-point rounding; an exact halving takes cv2's area average instead."""
    T, H, W, _ = frames.shape
    scale = short / min(H, W)
    h, w = int(H * scale + 0.5), int(W * scale + 0.5)
    if (h, w) == (H, W):
        return frames.copy()
    if (H, W) == (2 * h, 2 * w):  # cv2 switches INTER_LINEAR to its fast area path for an exact 2x reduction
        s = frames.reshape(T, h, 2, w, 2, 3).astype(np.int64).sum((2, 4))
        return ((s + 2) >> 2).astype(np.uint8)
    x = frames.astype(np.int64)
    left, right, a = _linear_taps(W, w, clamp_weights=True)
    rows = x[:, :, left] * a[0][None, None, :, None] + x[:, :, right] * a[1][None, None, :, None]  # x 2048
    top, bottom, b = _linear_taps(H, h, clamp_weights=False)
    b0, b1 = b[0][None, :, None, None], b[1][None, :, None, None]
    out = (((b0 * (rows[:, top] >> 4)) >> 16) + ((b1 * (rows[:, bottom] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def three_crop(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """mmaction2's ThreeCrop: three size x size crops along the longer side (start, end, centre)."""
    T, H, W, _ = frames.shape
    if min(H, W) != size:
        raise InputError(f"three_crop needs the shorter side resized to {size} first, got {H}x{W}")
    if H == size:
        step = (W - size) // 2
        return [frames[:, :, x:x + size] for x in (0, 2 * step, step)]
    step = (H - size) // 2
    return [frames[:, y:y + size] for y in (0, 2 * step, step)]


def views(frames: np.ndarray, pipeline: VideoPipeline = OFFICIAL, dtype: Any = np.float32) -> np.ndarray:
    """The evaluation views of a decoded clip: [3 * num_clips, 3, clip_len, crop, crop], normalised, in mmaction's
    order (crop-major: FormatShape reshapes ThreeCrop's crop-by-crop frame list)."""
    mean = np.asarray(pipeline.mean, dtype=np.float64)
    std = np.asarray(pipeline.std, dtype=np.float64)
    inds = sample_indices(len(frames), pipeline)                       # [num_clips, clip_len]
    resized = resize_shorter(frames[inds.reshape(-1)], pipeline.short_side)
    out = []
    for crop in three_crop(resized, pipeline.crop_size):               # [num_clips * clip_len, S, S, 3]
        x = (crop.astype(np.float64) - mean) / std
        x = x.reshape(len(inds), pipeline.clip_len, *x.shape[1:])      # [num_clips, T, S, S, 3]
        out.append(x.transpose(0, 4, 1, 2, 3).astype(dtype))          # [num_clips, 3, T, S, S]
    return np.concatenate(out)


@functools.lru_cache(maxsize=1)
def kinetics400_classes() -> tuple[str, ...]:
    """The 400 Kinetics-400 class names, in checkpoint order (swinref/data/kinetics400_classes.tsv)."""
    path = pathlib.Path(__file__).parent / "data" / "kinetics400_classes.tsv"
    return tuple(line.split("\t")[1] for line in path.read_text(encoding="utf-8").splitlines()
                 if line and not line.startswith("#"))


def _names(num_classes: int) -> Any:
    names = kinetics400_classes() if num_classes == 400 else None
    return lambda i: names[i] if names is not None else f"class {i}"


def predict_clips(model: Any, paths: Iterable[str | os.PathLike], *, top: int = 5, batch: int = 1,
                  pipeline: VideoPipeline | None = None) -> Iterator[dict[str, Any]]:
    """Per clip, in order: {'clip', 'top': [{index, name, probability}], 'views'}, or {'clip', 'error'} for a clip
    that cannot be read (reported and skipped). Probabilities: the mean of the views' softmax (average_clips='prob').
    A generator, so that a caller can show progress."""
    from swinref.layers import softmax

    cfg = model.config
    if not cfg.is_video:
        raise InputError(f"{cfg.name} is an image model; predict clips with a Video Swin checkpoint (swin3d_t, ...)")
    if cfg.num_classes == 0:
        raise InputError("this model has no classification head (num_classes 0)")
    if top < 1 or batch < 1:
        raise InputError(f"--top and --batch must be at least 1, got {top} and {batch}")
    name = _names(cfg.num_classes)
    pipeline = OFFICIAL if pipeline is None else pipeline
    for path in paths:
        try:
            x = views(read_frames(path), pipeline, dtype=np.dtype(model.dtype))
        except InputError as exc:
            yield {"clip": str(path), "error": str(exc)}
            continue
        probs = []
        for start in range(0, len(x), batch):
            logits = model(x[start:start + batch])
            logits = logits.get() if hasattr(logits, "get") else logits
            probs.append(softmax(np.asarray(logits, dtype=np.float64), np))
        mean = np.concatenate(probs).mean(0)
        order = np.argsort(-mean, kind="stable")[:top]
        yield {"clip": str(path), "views": len(x),
               "top": [{"index": int(i), "name": name(int(i)), "probability": float(mean[i])} for i in order]}
