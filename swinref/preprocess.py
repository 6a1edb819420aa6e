"""Image decoding and the official evaluation preprocessing, without torchvision.

The official repository (data/build.py, evaluation branch) does, for an image size S:
  S = 224 (TEST.CROP true):  resize the shorter side to int(256 / 224 * S) with bicubic interpolation, keeping the
                             aspect ratio (the longer side becomes int(new_short * long / short)), centre-crop S x S;
  S = 384 (TEST.CROP false): resize to S x S with bicubic interpolation, no crop;
then scale to [0, 1] and normalise with the ImageNet mean and std. torchvision's Resize and CenterCrop on PIL
images are exactly PIL's resize and a crop at round((h - S) / 2), which is what this module does with Pillow.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Iterable

import numpy as np

from swinref.errors import InputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_image", "decode_bytes", "to_rgb", "array_to_image", "preprocess",
           "imagenet_classes", "class_name", "default_crop"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_crop(size: tuple[int, int]) -> bool:
    """The official configs crop at 224 (and other sizes up to 256) and resize without cropping at 384."""
    return max(size) <= 256


def load_image(path: str | pathlib.Path):
    """Decode an image file with Pillow, as RGB (see `to_rgb` for the modes)."""
    from PIL import Image, UnidentifiedImageError

    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"image {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory; pass image files (e.g. {path}/*.jpg)")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise InputError(f"cannot decode {str(path)!r} as an image (Pillow does not recognise the format); "
                         "pass a JPEG, PNG, WebP, BMP or another format Pillow reads") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's decoders raise all three on damaged data
        raise InputError(f"cannot read image {str(path)!r}: {exc} (truncated or corrupted file?)") from None


def decode_bytes(data: bytes, name: str = "image bytes"):
    """Decode an encoded image (the bytes of a JPEG, PNG, ... file) with Pillow, as RGB."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise InputError(f"cannot decode {name} as an image (Pillow does not recognise the format); "
                         "pass encoded JPEG, PNG, WebP, BMP or other bytes Pillow reads") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {name}: {exc} (truncated or corrupted data?)") from None


# Pillow's modes for one channel of more than 8 bits: 16-bit PNG and TIFF greyscale open as I;16 (or as I, 32-bit
# integers holding the 16-bit values).
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img):
    """A decoded PIL image as 8-bit RGB, upright.

    - The EXIF orientation is applied (a phone's portrait JPEG is stored sideways with a rotation tag). timm and
      torchvision ignore the tag; an image of a cat the right way up is what the model was trained on.
    - 16-bit greyscale (I;16, I) is scaled to 8 bits, value / 257 rounded (65535 -> 255). Pillow's own
      convert("RGB") clips these values at 255, which turns almost every pixel white.
    - Everything else goes through Pillow's convert("RGB"), the loader of timm and torchvision: palette images take
      their palette's colours, CMYK is converted, and an alpha channel (RGBA, LA, a palette's transparency) is
      dropped, not composited: the colour stored under a transparent pixel is what the model sees, as in timm.
    """
    import warnings

    import numpy as np
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_MODES:
        wide = np.asarray(img, dtype=np.int64)
        eight = np.clip((wide + 128) // 257, 0, 255).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if img.mode == "RGB":
        return img
    with warnings.catch_warnings():  # "Palette images with Transparency expressed in bytes should be converted..."
        warnings.simplefilter("ignore", UserWarning)
        return img.convert("RGB")


def array_to_image(array, name: str = "image array"):
    """An image held as an array (as Ray Data's read_images gives it): [H, W, 3] or [H, W] of uint8 (or uint16,
    scaled as 16-bit files are) -> a PIL RGB image."""
    import numpy as np
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]  # RGBA: the alpha dropped, as convert("RGB") does
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise InputError(f"{name}: expected an image array [H, W, 3] or [H, W], got shape {list(a.shape)}; "
                         "pass channels-last pixels (or an already preprocessed float batch [B, 3, H, W])")
    if a.dtype == np.uint16:
        a = np.clip((a.astype(np.int64) + 128) // 257, 0, 255).astype(np.uint8)
    if a.dtype != np.uint8:
        raise InputError(f"{name}: expected 8- or 16-bit pixels (uint8 or uint16), got dtype {a.dtype}; "
                         "scale to 0..255 uint8 first, or pass an already preprocessed float batch [B, 3, H, W]")
    return Image.fromarray(a).convert("RGB")


def _resize_shorter(img, short: int):
    from PIL import Image

    w, h = img.size
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    return img.resize((new_w, new_h), Image.BICUBIC)


def preprocess(img, size: tuple[int, int] = (224, 224), crop: bool | None = None,
               mean: Iterable[float] = IMAGENET_MEAN, std: Iterable[float] = IMAGENET_STD) -> np.ndarray:
    """A PIL image -> float32 array [3, H, W], normalised, as the official evaluation transform."""
    from PIL import Image

    H, W = size
    crop = default_crop(size) if crop is None else crop
    if crop:
        if H != W:
            raise InputError(f"the official centre crop is square; got size {H}x{W}: pass crop=False to resize "
                             "to H x W directly")
        img = _resize_shorter(img, int((256 / 224) * H))
        w, h = img.size
        top, left = int(round((h - H) / 2.0)), int(round((w - W) / 2.0))
        img = img.crop((left, top, left + W, top + H))
    else:
        img = img.resize((W, H), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0  # H, W, 3
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(synset, name) for the 1000 ImageNet-1K classes, in checkpoint order."""
    path = pathlib.Path(__file__).parent / "data" / "imagenet1k_classes.tsv"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            _, synset, name = line.split("\t")
            rows.append((synset, name))
    return tuple(rows)


def class_name(index: int, num_classes: int) -> str:
    """The ImageNet-1K name of a class index, or 'class N' for heads of another size."""
    if num_classes == 1000:
        return imagenet_classes()[index][1]
    return f"class {index}"
