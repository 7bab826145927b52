"""The file formats every image source shares: images, palette label PNGs, split lists.

Every reading failure is a UserError that names the file and says what to do.
"""
import os

import numpy as np
from PIL import Image

from engine.errors import UserError
from engine.files import save_image
from engine.parallel import imap_unordered

IGNORE_INDEX = 255  # label value of pixels that are not scored (object boundaries, unlabelled regions)


def bit_palette():
    """The 256-colour palette of PASCAL VOC (also used for COCO labels) as a flat list of 768 ints:
    the bits of a label id are interleaved into red, green and blue."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= ((bits >> 0) & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [red, green, blue]
    return palette


def save_label_png(path, label, palette=None):
    """Write a (H, W) uint8 array of label ids as a palette PNG (pixel indices are the ids), atomically."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    image.putpalette(palette or bit_palette())
    save_image(path, image)


def read_image(path, advice="replace or remove it"):
    """An RGB image as a uint8 (H, W, 3) array; `advice` ends the message when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except Exception as error:
        raise UserError(f"image {path} cannot be decoded ({type(error).__name__}); {advice}") from None


def image_size(path):
    """(height, width) of an image from its header, without decoding it; None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:
        return None


def read_label(path):
    """A label PNG as (H, W) uint8 label ids; RGB-coloured labels are refused (read indices, never colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(f"label {path} is a {image.mode} image; labels are palette PNGs whose "
                                f"pixel indices are class ids (use SegmentationClassAug, not coloured renderings)")
            return np.asarray(image)
    except FileNotFoundError:
        raise UserError(f"ground-truth label {path} does not exist") from None
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"label {path} cannot be decoded ({type(error).__name__})") from None


def decodes(reader, path):
    """True when `path` exists and `reader` (read_label / read_image) decodes it."""
    if not os.path.exists(path):
        return False
    try:
        reader(path)
        return True
    except UserError:
        return False


def read_name_list(path, hint="it should list one image name per line"):
    """A split file: one image name per line (the first token of each non-empty line). `hint` ends the
    message when the file does not exist (where the dataset's lists are)."""
    if not os.path.isfile(path):
        raise UserError(f"split file {path} does not exist; {hint}")
    with open(path) as handle:
        names = [line.strip().split()[0] for line in handle if line.strip()]
    if not names:
        raise UserError(f"split file {path} is empty; it should list one image name per line")
    return names


def _decodable(path):
    return path, decodes(read_image, path)


def undecodable_images(paths, ctx, num_workers):
    """The paths among `paths` whose image cannot be decoded: each process decodes its share (with
    num_workers processes), and the shares are gathered so every rank gets the same set."""
    from engine import distributed  # torch: imported by the training stages only

    share = paths[ctx.rank::ctx.world_size]
    found = [path for path, ok in imap_unordered(_decodable, share, num_workers, chunksize=16) if not ok]
    return {path for paths_of_rank in distributed.all_gather_objects(found) for path in paths_of_rank}
