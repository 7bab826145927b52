import numpy as np
import torch
import torch.nn.functional as F

from wsss.cam import cam_record, fuse_flip, normalize_by_max, strided_size, sum_resized


def test_flip_fusion_is_the_elementwise_max_with_the_unflipped_mirror():
    original = torch.tensor([[[1.0, 5.0, 2.0]]])
    mirrored_view = torch.tensor([[[4.0, 0.0, 3.0]]])  # CAM of the flipped image: flip back -> 3, 0, 4
    fused = fuse_flip(torch.stack([original, mirrored_view]))
    assert fused.tolist() == [[[3.0, 5.0, 4.0]]]


def test_strided_size_is_the_ceiling_of_a_quarter():
    assert strided_size((375, 500)) == (94, 125)
    assert strided_size((8, 9)) == (2, 3)


def test_normalize_divides_each_map_by_its_max_plus_eps():
    cams = torch.tensor([[[2.0, 4.0]], [[0.0, 0.0]]])
    out = normalize_by_max(cams)
    assert torch.allclose(out[0], torch.tensor([[2 / (4 + 1e-5), 4 / (4 + 1e-5)]]))
    assert torch.equal(out[1], torch.zeros(1, 2))


def test_cam_record_keeps_present_classes_and_sums_scales():
    torch.manual_seed(0)
    scale_one, scale_half = torch.rand(20, 4, 5), torch.rand(20, 2, 3)
    label = torch.zeros(20)
    label[[3, 14]] = 1
    record = cam_record([scale_one, scale_half], label, (13, 18))
    assert record["keys"].dtype == np.int64 and record["keys"].tolist() == [3, 14]
    assert record["cam"].shape == (2, 4, 5) and record["high_res"].shape == (2, 13, 18)
    assert record["cam"].dtype == np.float32 and record["high_res"].dtype == np.float32
    summed = sum(F.interpolate(c[None, [3, 14]], (13, 18), mode="bilinear", align_corners=False)[0]
                 for c in (scale_one, scale_half))
    expected = summed / (summed.flatten(1).max(1).values[:, None, None] + 1e-5)
    assert np.allclose(record["high_res"], expected.numpy(), atol=1e-6)
    assert np.allclose(record["high_res"].reshape(2, -1).max(1), 1.0, atol=1e-4)
    assert np.allclose(record["cam"].reshape(2, -1).max(1), 1.0, atol=1e-4)


def test_sum_resized_of_identical_sizes_is_a_plain_sum():
    a, b = torch.rand(3, 4, 4), torch.rand(3, 4, 4)
    assert torch.allclose(sum_resized([a, b], (4, 4)), a + b)


def test_an_image_without_a_class_gets_an_empty_record():
    """COCO's unannotated images: no key, empty maps at the image's size (every later stage reads them)."""
    record = cam_record([torch.rand(80, 4, 5), torch.rand(80, 2, 3)], torch.zeros(80), (13, 18))
    assert record["keys"].tolist() == [] and record["keys"].dtype == np.int64
    assert record["cam"].shape == (0, 4, 5) and record["high_res"].shape == (0, 13, 18)
