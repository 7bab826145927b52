"""net/resnet.py: this project's ResNet against torchvision's, which it replaces in every run (torchvision's
import brings torch._dynamo: 2.4 s at every stage's start): same state dict, same random weights for a seed,
same features, in the CAM network's, the IRN's and DeepLab's settings; and no run imports torchvision."""
import subprocess
import sys

import pytest
import torch
import torchvision

from net.resnet import FixedBatchNorm2d, resnet
from tests.support import ROOT

SETTINGS = [  # (ours, torchvision's)
    ({}, {}),
    ({"zero_init_residual": True}, {"zero_init_residual": True}),
    ({"norm_layer": FixedBatchNorm2d, "dilate_stages": (False, True, True)},
     {"norm_layer": FixedBatchNorm2d, "replace_stride_with_dilation": [False, True, True]}),
]


def features(network, images):
    stem = network.maxpool(network.relu(network.bn1(network.conv1(images))))
    return network.layer4(network.layer3(network.layer2(network.layer1(stem))))


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
@pytest.mark.parametrize("ours, theirs", SETTINGS)
def test_the_same_network_as_torchvisions(name, ours, theirs):
    torch.manual_seed(3)
    network = resnet(name, **ours).eval()
    torch.manual_seed(3)
    reference = getattr(torchvision.models, name)(weights=None, **theirs).eval()
    mine, its = network.state_dict(), reference.state_dict()
    assert list(mine) == list(its)
    assert all(torch.equal(mine[key], its[key]) for key in mine)  # the seed gives the same weights
    images = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        assert torch.allclose(features(network, images), features(reference, images), atol=1e-6)
        assert torch.allclose(network.fc(network.avgpool(features(network, images)).flatten(1)),
                              reference(images), atol=1e-5)


def test_building_the_networks_does_not_import_torchvision():
    code = ("import sys; from net.classifier import VWEClassifier; from net.irn import IRN; "
            "from net.deeplab import build_deeplab; VWEClassifier('resnet50', 80); IRN(pretrained=False); "
            "build_deeplab(81, 'torchvision', 'resnet50'); print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
