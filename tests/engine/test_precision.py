"""engine/precision.py with the training loop's step and CAM inference: mixed precision and channels_last
train, and the CAMs stay close to float32."""
import numpy as np
import pytest
import torch

from datasets import synthetic
from datasets.classification import flip_pyramid
from engine.errors import UserError
from engine.precision import amp_dtype
from engine.training import compute_gradients
from net.classifier import VWEClassifier as Net
from net.classifier import batch_losses
from wsss.cam import multiscale_cam_record
from wsss.labels import cam_to_label

CPU = torch.device("cpu")


def small_net(memory_format=torch.contiguous_format):
    torch.manual_seed(0)
    return Net(k_words=8, pretrained=False, freeze_bn=False).to(memory_format=memory_format)


def test_amp_names():
    assert amp_dtype("off", "train.amp") is None and amp_dtype(False, "train.amp") is None  # YAML: off -> false
    assert amp_dtype("bf16", "cam.amp") is torch.bfloat16 and amp_dtype("fp16", "cam.amp") is torch.float16
    with pytest.raises(UserError, match="train.amp='fp8': choose one of off, bf16, fp16"):
        amp_dtype("fp8", "train.amp")


@pytest.mark.parametrize("amp, channels_last", [("bf16", False), ("fp16", True)])
def test_mixed_precision_training_step(amp, channels_last):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = small_net(memory_format).train()
    dtype = amp_dtype(amp, "train.amp")
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16, init_scale=1024.0)
    images = torch.randn(2, 3, 48, 48).contiguous(memory_format=memory_format)
    labels = torch.tensor([[1.0] + [0.0] * 19, [0.0] * 19 + [1.0]])
    losses = compute_gradients(model, scaler, {"img": images, "label": labels}, batch_losses, CPU, dtype)
    assert set(losses) == {"cls", "hist", "word"} and all(torch.isfinite(v) for v in losses.values())
    assert all(v.dtype == torch.float32 for v in losses.values())  # the losses are computed in float32
    grad = model.classifier.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all()

    # The gradient equals the float32 one up to AMP's precision (fp16 gradients are scaled back by the scaler).
    reference_model = small_net().train()
    compute_gradients(reference_model, torch.amp.GradScaler("cpu", enabled=False),
                      {"img": images.contiguous(), "label": labels}, batch_losses, CPU, None)
    unscaled = grad / (scaler.get_scale() if scaler.is_enabled() else 1.0)
    reference = reference_model.classifier.weight.grad
    assert (unscaled - reference).norm() / reference.norm() < 0.05


def test_fp16_cams_stay_close_to_float32():
    """cam.amp=fp16 on generated scenes: measured on this CPU, max |difference| ~2e-3, mean ~1e-4."""
    model = small_net(torch.channels_last).eval()
    rng = np.random.default_rng(0)
    label = torch.zeros(20)
    label[[3, 11]] = 1
    for _ in range(2):
        image = synthetic.make_scene(rng, 60, 80, max_objects=3)[0]
        pyramid = flip_pyramid(image, [1.0, 0.5, 1.5])
        exact = multiscale_cam_record(model, pyramid, label, image.shape[:2], CPU)
        fast = multiscale_cam_record(model, pyramid, label, image.shape[:2], CPU, torch.float16, torch.channels_last)
        assert fast["high_res"].dtype == np.float32 and fast["keys"].tolist() == [3, 11]
        difference = np.abs(fast["high_res"] - exact["high_res"])
        assert difference.mean() < 1e-3 and difference.max() < 2e-2
        agreement = (cam_to_label(fast["high_res"], fast["keys"], 0.14)
                     == cam_to_label(exact["high_res"], exact["keys"], 0.14)).mean()
        assert agreement > 0.99


def test_channels_last_cams_equal_contiguous_ones():
    model = small_net().eval()
    rng = np.random.default_rng(1)
    image = synthetic.make_scene(rng, 50, 70, max_objects=2)[0]
    pyramid = flip_pyramid(image, [1.0, 0.5])
    label = torch.zeros(20)
    label[5] = 1
    exact = multiscale_cam_record(model, pyramid, label, image.shape[:2], CPU)
    nhwc = multiscale_cam_record(model.to(memory_format=torch.channels_last), pyramid, label, image.shape[:2], CPU,
                                 None, torch.channels_last)
    np.testing.assert_allclose(nhwc["high_res"], exact["high_res"], atol=1e-5)
