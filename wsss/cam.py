"""Multi-scale CAM fusion, as the paper's infer_cam.py runs it, on tensors; the CAM file format."""
import numpy as np
import torch
import torch.nn.functional as F

from datasets.files import read_image
from engine.errors import UserError
from engine.precision import autocast

CAM_STRIDE = 4  # the "cam" entry is stored at 1/4 resolution for IRNet's later stages
CAM_SETTINGS_FILE = "cam_settings.json"  # in a CAM folder: what made the files there (infer_cam.py)


def strided_size(size, stride=CAM_STRIDE):
    """ceil(H / stride), ceil(W / stride)."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def fuse_flip(cam_pair):
    """(2, C, h, w) CAMs of an image and its mirror -> (C, h, w): element-wise max (as run; IRNet sums)."""
    return torch.maximum(cam_pair[0], cam_pair[1].flip(-1))


def sum_resized(cams_per_scale, size):
    """Bilinearly resize each (C, h_s, w_s) map to `size` and sum over scales -> (C, *size)."""
    return torch.stack([F.interpolate(cams[None], size, mode="bilinear", align_corners=False)[0]
                        for cams in cams_per_scale]).sum(dim=0)


def normalize_by_max(cams, eps=1e-5):
    """Divide each class map by its own maximum + eps."""
    return cams / (cams.flatten(1).amax(dim=1)[:, None, None] + eps)


def cam_record(cams_per_scale, label, image_size):
    """Fused per-scale CAMs -> the output dict {"keys", "cam", "high_res"} of one image.

    cams_per_scale: flip-fused (n_classes, h_s, w_s) maps, one per scale; label: (n_classes,) multi-hot;
    image_size: (H, W). Only the classes of the image-level label are kept.
    """
    keys = torch.nonzero(label > 0.5)[:, 0]
    present = [cams[keys] for cams in cams_per_scale]
    strided = normalize_by_max(sum_resized(present, strided_size(image_size)))
    high_res = normalize_by_max(sum_resized(present, tuple(image_size)))
    return {"keys": keys.cpu().numpy().astype("int64"),
            "cam": strided.float().cpu().numpy(),
            "high_res": high_res.float().cpu().numpy()}


@torch.inference_mode()
def multiscale_cam_record(model, pyramid, label, image_size, device, autocast_dtype=None,
                          memory_format=torch.contiguous_format):
    """Run the model on every (2, 3, h, w) scale of `pyramid` and fuse -> cam_record.

    autocast_dtype (torch.bfloat16 / torch.float16) runs the network under AMP; the flip fusion,
    resizing and normalisation always run in float32.
    """
    fused = []
    for pair in pyramid:
        images = pair.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast(device, autocast_dtype):
            _, cams = model(images, return_cam=True)
        fused.append(fuse_flip(cams.float()))
    return cam_record(fused, label.to(device), image_size)


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
