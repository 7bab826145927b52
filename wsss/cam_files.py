"""The CAM file format (IRNet's): one pickled dict per image, {"keys", "cam", "high_res"}; reading it back.

NumPy only, so that the commands that read CAM files (evaluation, pictures) start without torch.
"""
import os

import numpy as np

from datasets.files import read_image
from engine.errors import UserError
from engine.files import manifest_changes, missing_files, read_manifest

CAM_SETTINGS_FILE = "cam_settings.json"  # in a CAM folder: what made the files there (infer_cam.py)


CAM_DTYPES = ("float32", "float16")  # what the maps may be stored as (cam.dtype); they are read as float32


def stored_record(record, dtype="float32"):
    """The CAM dict as a file holds it: "cam" and "high_res" in `dtype` (float16 halves the disk: COCO's
    train2014 takes about 300 GB in float32; the maps lie in [0, 1], where float16 is within 2.5e-4)."""
    if dtype == "float32":
        return record
    return {**record, "cam": record["cam"].astype(dtype), "high_res": record["high_res"].astype(dtype)}


def load_cam_file(path):
    """A CAM file written by infer_cam.py -> its dict, checked for completeness (UserError if not), its maps
    as float32 whatever they were stored as.

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
    if high_res.dtype != np.float32 or cam.dtype != np.float32:  # stored as float16 (cam.dtype)
        record = {**record, "cam": cam.astype(np.float32), "high_res": high_res.astype(np.float32)}
    return record


def image_of_cam(source, name, high_res, cam_dir):
    """The image of `name` (from `source`), checked to be the size of its (k, H, W) CAMs."""
    path = source.image_path(name)
    image = read_image(path)
    if image.shape[:2] != high_res.shape[1:]:
        raise UserError(f"image {path} is {image.shape[1]}x{image.shape[0]} but its CAM in {cam_dir} is "
                        f"{high_res.shape[2]}x{high_res.shape[1]}; CAMs and images come from different datasets")
    return image


def cams_of_current_images(cam_dir, source, names):
    """Refuse CAM files made from images that were regenerated since: they would be scored (or refined)
    against other images. infer_cam.py records {name: image file size}; the names both know are compared."""
    made = read_manifest(os.path.join(cam_dir, CAM_SETTINGS_FILE)).get("images")
    if not isinstance(made, dict):
        return  # CAMs made by other code (or an older version): nothing to compare
    common = [name for name in names if name in made]
    try:
        changed = manifest_changes(made, source.image_signatures(common))
    except OSError:
        return  # the images are not there to compare with
    if changed:
        raise UserError(f"{len(changed)} of the CAM files in {cam_dir} were made before their images changed, e.g. "
                        f"{', '.join(changed[:3])} (the dataset was regenerated or replaced); redo them: python "
                        f"infer_cam.py --overwrite (or cam.overwrite=true)")


def cam_inputs(cam_dir, source, names, split_key, split):
    """What a stage that reads the CAM files of `names` records of them in its own manifest: {"cam_settings":
    their folder's manifest}, or for CAMs made by other code (taken as they are, with a note) {"cam_settings":
    None, "cam_dir": the folder}. Missing files are one error that counts them and says how to make them;
    files of images regenerated since are refused."""
    missing = missing_files(names, cam_dir, ".npy")
    if missing:
        raise UserError(f"{len(missing)} of the {len(names)} CAM files of {split_key} are missing from {cam_dir} "
                        f"(e.g. {', '.join(missing[:3])}); make them with: python infer_cam.py cam.split={split}")
    manifest = read_manifest(os.path.join(cam_dir, CAM_SETTINGS_FILE))
    if not manifest:
        print(f"note: {cam_dir} has no {CAM_SETTINGS_FILE} (CAMs made by other code): they are taken as they are",
              flush=True)
        return {"cam_settings": None, "cam_dir": os.path.abspath(cam_dir)}
    cams_of_current_images(cam_dir, source, names)
    return {"cam_settings": manifest}  # the folder's path is not recorded: moving a work folder is no change
