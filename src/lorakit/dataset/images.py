"""Opening user photos safely and turning them into the plain RGB that training expects.

Photo folders hold everything: zero-byte files, HTML saved as `.jpg`, half-downloaded
JPEGs, 16-bit PNGs, CMYK scans, transparent PNGs, Display-P3 phone photos and sideways
pictures whose rotation lives only in EXIF. Every failure here becomes a one-line
`LorakitError` naming the file, and every success is upright sRGB RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

from lorakit.errors import LorakitError

# Above this many pixels an image is refused before decoding: a 20000×20000 "photo" is far
# more likely a decompression bomb (or a scan no trainer can use) than a training image,
# and decoding it would take gigabytes. 100 MP still admits every camera and phone photo
# in common use (a 108 MP phone sensor is the exception and is better downscaled first).
MAX_PIXELS = 100_000_000
EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


@dataclass(frozen=True)
class ImageHeader:
    """What the file says about itself, read without decoding the pixels."""

    path: Path
    width: int
    height: int
    mode: str
    orientation: int
    bit_depth: int
    has_alpha: bool


class ImageError(LorakitError):
    """An image that cannot be used; `reason` and `fix` feed lint findings."""

    def __init__(self, path: Path, reason: str, fix: str) -> None:
        super().__init__(f"{path}: {reason}; {fix}")
        self.path = path
        self.reason = reason
        self.fix = fix


def _unreadable(path: Path, reason: str) -> ImageError:
    return ImageError(path, f"cannot read image ({reason})", "re-export it or remove it")


def _too_large(path: Path, what: str) -> ImageError:
    return ImageError(
        path,
        f"{what} is too large to open safely (over {MAX_PIXELS // 1_000_000} MP, "
        "a decompression bomb?)",
        "downscale it to at most 2048 px per side",
    )


def open_image(path: Path) -> Image.Image:
    """Open lazily (header only), refusing non-images and decompression bombs."""
    if path.stat().st_size == 0:
        raise _unreadable(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, "image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, "not a supported image") from exc
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise _too_large(path, f"{image.width}×{image.height}")
    return image


def header_problem(path: Path) -> ImageError | None:
    """Why `path` cannot be used, judged from its header alone (fast enough for `scan`,
    which must not decode every photo), or None when the header is fine."""
    try:
        open_image(path).close()
    except ImageError as exc:
        return exc
    return None


def _png_bit_depth(path: Path) -> int | None:
    """Bits per channel from the PNG header: Pillow silently reads 16-bit RGB as 8-bit."""
    with path.open("rb") as f:
        head = f.read(25)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info


def describe(image: Image.Image, path: Path) -> ImageHeader:
    """Header facts of an opened (not yet decoded) image."""
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        orientation = 1
    bit_depth = _png_bit_depth(path) if image.format == "PNG" else None
    if bit_depth is None:
        bit_depth = 16 if image.mode in _SIXTEEN_BIT_MODES else 8
    return ImageHeader(
        path=path,
        width=image.width,
        height=image.height,
        mode=image.mode,
        orientation=orientation,
        bit_depth=bit_depth,
        has_alpha=_has_alpha(image),
    )


def decode(image: Image.Image, path: Path) -> Image.Image:
    """Decode all pixels now, so truncated or corrupt files fail here with a clear line."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _unreadable(path, f"truncated or corrupt: {exc}") from exc
    return image


def _sixteen_bit_to_8(image: Image.Image) -> Image.Image:
    """Scale 16-bit grey to 8-bit; Pillow's convert would clip everything above 255."""
    data = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode != "F" else max(float(data.max()), 1e-6)
    return Image.fromarray(np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _to_srgb(image: Image.Image) -> Image.Image:
    """Apply an embedded colour profile (Display P3, Adobe RGB, CMYK) into sRGB."""
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in {"RGB", "RGBA", "CMYK", "L"}:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        target = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(image, source, target, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded image → RGB; transparency is flattened onto white, as most cut-out
    product and character images are meant to be seen."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_8(image)
    image = _to_srgb(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (most trainers ignore it and learn sideways faces)."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError):
        return image


def load_rgb(path: Path) -> Image.Image:
    """Open, fully decode, rotate upright and convert to sRGB RGB."""
    image = open_image(path)
    with image:
        decode(image, path)
        rgb = to_rgb(upright(image))
    rgb.load()
    return rgb


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: few strong edges → small value → blurry."""
    g = gray.astype(np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0
