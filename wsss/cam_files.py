"""The CAM file format (IRNet's): one pickled dict per image, {"keys", "cam", "high_res"}; reading it back.

NumPy only, so that the commands that read CAM files (evaluation, pictures) start without torch.
"""
import numpy as np

from datasets.files import read_image
from engine.errors import UserError

CAM_SETTINGS_FILE = "cam_settings.json"  # in a CAM folder: what made the files there (infer_cam.py)


def load_cam_file(path):
    """A CAM file written by infer_cam.py -> its dict, checked for completeness (UserError if not).

    The file is unpickled: only ever load CAM files your own runs wrote.
    """
    try:
        record = np.load(path, allow_pickle=True).item()
        keys, cam, high_res = record["keys"], record["cam"], record["high_res"]
        consistent = (keys.ndim == 1 and cam.ndim == 3 and high_res.ndim == 3
                      and len(keys) == len(cam) == len(high_res))
    except FileNotFoundError:
        raise UserError(f"CAM file {path} does not exist; run infer_cam.py first") from None
    except Exception as error:
        raise UserError(f"CAM file {path} is corrupt or not a CAM file ({type(error).__name__}); "
                        f"run infer_cam.py again (it redoes such files)") from None
    if not consistent:
        raise UserError(f"CAM file {path} is corrupt: keys {keys.shape}, cam {cam.shape}, high_res {high_res.shape} "
                        f"do not agree; run infer_cam.py again (it redoes such files)")
    return record


def image_of_cam(source, name, high_res, cam_dir):
    """The image of `name` (from `source`), checked to be the size of its (k, H, W) CAMs."""
    path = source.image_path(name)
    image = read_image(path)
    if image.shape[:2] != high_res.shape[1:]:
        raise UserError(f"image {path} is {image.shape[1]}x{image.shape[0]} but its CAM in {cam_dir} is "
                        f"{high_res.shape[2]}x{high_res.shape[1]}; CAMs and images come from different datasets")
    return image
