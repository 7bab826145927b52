"""Multi-scale CAM fusion, as the paper's infer_cam.py runs it, on tensors (the files: wsss/cam_files.py)."""
import torch
import torch.nn.functional as F

from engine.precision import autocast

CAM_STRIDE = 4  # the "cam" entry is stored at 1/4 resolution for IRNet's later stages


def strided_size(size, stride=CAM_STRIDE):
    """ceil(H / stride), ceil(W / stride)."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def fuse_flip(cam_pair):
    """(2, C, h, w) CAMs of an image and its mirror -> (C, h, w): element-wise max (as run; IRNet sums)."""
    return torch.maximum(cam_pair[0], cam_pair[1].flip(-1))


def sum_resized(cams_per_scale, size):
    """Bilinearly resize each (C, h_s, w_s) map to `size` and sum over scales -> (C, *size)."""
    if cams_per_scale[0].shape[0] == 0:  # an image without a class (COCO's unannotated images)
        return cams_per_scale[0].new_zeros((0, *size))
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
