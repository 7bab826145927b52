"""State dicts saved by the authors' released code load into our Net and give the same outputs.

The authors' network is rebuilt here, independently of net/, from its module layout: a
torchvision-layout ResNet-50 with always-running-stats BatchNorm and an output stride of 16,
the stage1-4 / backbone / newly_added aliases, the HSPP head and the visual-word encoder with a
(K, 2048, 1, 1) `centroid`. Every weight and BatchNorm statistic is randomised, the reference is
saved as nn.DataParallel saves it ("module." prefix), loaded with load_checkpoint, and both
networks are compared in float64 (forward outputs, CAMs and the multi-scale CAM record).
"""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from engine.errors import UserError
from net.classifier import VWEClassifier as Net
from net.classifier_weights import load_checkpoint
from wsss.cam import multiscale_cam_record

K = 8
N_CLASSES = 20
SEED = 20210801
IMAGE_SIZE = (70, 53)  # not divisible by 16: feature maps 5 x 4
CAM_IMAGE_SIZE = (45, 38)  # feature maps 3 x 3 at scale 1, 2 x 2 at 0.5, 5 x 4 at 1.5
SCALES = (1.0, 0.5, 1.5)


# ---------------------------------------------------------------------------------------------
# The authors' network, rebuilt from its layout

class RefFixedBN(nn.BatchNorm2d):
    """Always normalises with the running statistics (written out, not via F.batch_norm)."""

    def forward(self, x):
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def ref_hspp(x, gamma=2):
    """(gamma * GAP + sum_l GAP(maxpool(kernel=(h // l, w // l)))) / (gamma + 3), as the authors write it."""
    h, w = x.shape[-2:]
    out = gamma * F.adaptive_avg_pool2d(x, 1)
    for level in (1, 2, 4):
        out = out + F.adaptive_avg_pool2d(F.max_pool2d(x, kernel_size=(h // level, w // level)), 1)
    return out / (gamma + 3)


def ref_words(x, centroid):
    """Soft assignment of the detached, normalised features to the normalised (K, D, 1, 1) centroids."""
    xn = F.normalize(x, dim=1).detach()
    cn = F.normalize(centroid, dim=1)
    corr = F.softmax(F.conv2d(xn, cn), dim=1)
    y_word = F.one_hot(corr.argmax(dim=1), corr.shape[1]).sum(dim=(1, 2)).gt(0).float()
    return corr, y_word


class RefVWE(nn.Module):
    def __init__(self, k_words):
        super().__init__()
        self.centroid = nn.Parameter(torch.randn(k_words, 2048, 1, 1))

    def forward(self, x):
        return ref_words(x, self.centroid)


class RefNet(nn.Module):
    """The authors' network. memory_bank=True is their VWL-M file: no VWE module (newly_added is
    classifier, fc_a, fc_b) and forward() takes the (K, D) codebook as an argument."""

    def __init__(self, k_words, backbone="resnet50", memory_bank=False, hspp_gamma=2):
        super().__init__()
        self.memory_bank, self.hspp_gamma = memory_bank, hspp_gamma
        self.resnet = getattr(torchvision.models, backbone)(weights=None, norm_layer=RefFixedBN)
        self.resnet.layer4[0].conv2.stride = (1, 1)
        self.resnet.layer4[0].downsample[0].stride = (1, 1)
        del self.resnet.fc, self.resnet.avgpool
        r = self.resnet
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.classifier = nn.Conv2d(2048, N_CLASSES, 1, bias=False)
        if not memory_bank:
            self.VWE = RefVWE(k_words)
        self.fc_a = nn.Conv2d(k_words, N_CLASSES, 1, bias=False)
        self.fc_b = nn.Conv2d(2048, k_words, 1, bias=False)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        heads = [self.classifier, self.fc_a, self.fc_b]
        if not memory_bank:
            heads.insert(1, self.VWE)
        self.newly_added = nn.ModuleList(heads)

    def features(self, x):
        x2 = self.stage2(self.stage1(x)).detach()
        return self.stage4(self.stage3(x2))

    def cams(self, x):
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def forward(self, x, return_cam=False, codebook=None):
        x4 = self.features(x)
        logits = self.classifier(ref_hspp(x4, self.hspp_gamma)).view(x4.shape[0], -1)
        if return_cam:
            return logits, F.relu(F.conv2d(x4, self.classifier.weight))
        if self.memory_bank:
            corr, y_word = ref_words(x4, codebook[:, :, None, None].to(x4.dtype))
        else:
            corr, y_word = self.VWE(x4)
        hist = self.fc_a(corr.sum(dim=(2, 3), keepdim=True)).view(x4.shape[0], -1)
        word = self.fc_b(F.adaptive_avg_pool2d(x4, 1)).view(x4.shape[0], -1)
        return logits, hist, word, y_word


def randomised_reference(k_words=K, seed=SEED, **layout):
    """A reference network whose every parameter and BatchNorm statistic is random (nothing identity)."""
    torch.manual_seed(seed)
    ref = RefNet(k_words, **layout)
    with torch.no_grad():
        for name, module in ref.resnet.named_modules():
            # convolutions keep torchvision's random (kaiming) initialisation
            if isinstance(module, nn.BatchNorm2d):
                # keep each residual branch small so 16 random blocks do not blow up
                gain = (0.1, 0.4) if name.endswith("bn3") or name.endswith("downsample.1") else (0.5, 1.5)
                module.weight.uniform_(*gain)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10_000, ())))
        for conv in (ref.classifier, ref.fc_a, ref.fc_b):
            conv.weight.normal_(0.0, 1.0 / math.sqrt(conv.in_channels))
        if not ref.memory_bank:
            ref.VWE.centroid.normal_()
    return ref.eval()


def authors_state_dict(ref, data_parallel=True):
    """What the authors' training saves: nn.DataParallel(model).state_dict() (an OrderedDict with
    "module." keys and _metadata, aliases included), or the bare model's state dict."""
    state = nn.DataParallel(ref).state_dict() if data_parallel else ref.state_dict()
    if data_parallel:
        assert all(key.startswith("module.") for key in state)
    return state


def assert_close(actual, expected, rel=1e-5):
    """Equal up to float noise relative to the magnitude of the expected tensor."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == expected.shape
    scale = max(float(expected.abs().max()), 1e-12)
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


# ---------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def reference():
    return randomised_reference()


@pytest.fixture(scope="module")
def authors_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("authors") / "res50_vwe.pth"
    torch.save(authors_state_dict(reference), path)
    return path


@pytest.fixture(scope="module")
def loaded(authors_file):
    model = Net(backbone="resnet50", k_words=K, pretrained=False)
    load_checkpoint(model, authors_file)
    return model.eval()


@pytest.fixture(scope="module")
def pair64(reference, loaded):
    """(reference, ours) in float64; the float32 originals stay untouched."""
    return copy.deepcopy(reference).double().eval(), copy.deepcopy(loaded).double().eval()


@pytest.fixture(scope="module")
def spare_net():
    """A second K=8 model: the target of failing loads (which leave it untouched) and of test 4."""
    return Net(backbone="resnet50", k_words=K, pretrained=False)


def _image(n=2, size=IMAGE_SIZE, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# 1. Loading and forward equivalence

def test_reference_is_not_trivial(reference):
    state = reference.state_dict()
    assert state["VWE.centroid"].shape == (K, 2048, 1, 1)
    assert torch.equal(state["resnet.conv1.weight"], state["stage1.0.weight"])
    assert torch.equal(state["backbone.3.0.2.bn3.running_var"], state["resnet.layer4.2.bn3.running_var"])
    assert torch.equal(state["newly_added.1.centroid"], state["VWE.centroid"])
    assert not torch.allclose(state["resnet.layer3.0.bn1.running_var"], torch.ones(256))
    assert not torch.allclose(state["resnet.layer3.0.bn1.running_mean"], torch.zeros(256))
    assert not torch.allclose(state["resnet.bn1.weight"], torch.ones(64))


def test_authors_checkpoint_loads_every_tensor(reference, loaded):
    ours = loaded.state_dict()
    ref = reference.state_dict()
    assert torch.equal(ours["backbone.conv1.weight"], ref["resnet.conv1.weight"])
    assert torch.equal(ours["backbone.bn1.running_mean"], ref["resnet.bn1.running_mean"])
    for name in ("layer4.0.downsample.1.running_var", "layer2.3.bn3.num_batches_tracked"):
        assert torch.equal(ours[f"backbone.{name}"], ref[f"resnet.{name}"])
    assert torch.equal(ours["classifier.weight"], ref["classifier.weight"])
    assert torch.equal(ours["hist_classifier.weight"], ref["fc_a.weight"])
    assert torch.equal(ours["word_classifier.weight"], ref["fc_b.weight"])
    assert torch.equal(ours["word_encoder.codebook"], ref["VWE.centroid"].flatten(1))
    # every tensor of ours came from the file: none is still at its random initialisation
    ref_tensors = {key[len("resnet."):]: value for key, value in ref.items() if key.startswith("resnet.")}
    for key, value in ours.items():
        if key.startswith("backbone."):
            assert torch.equal(value, ref_tensors[key[len("backbone."):]]), key


def test_forward_outputs_match_authors_network(pair64):
    ref, ours = pair64
    x = _image()
    with torch.no_grad():
        expected = ref(x)
        actual = ours(x)
        ours.train()  # frozen BatchNorm: training mode still normalises with the running stats
        try:
            actual_train = ours(x)
        finally:
            ours.eval()
    for outputs in (actual, actual_train):
        assert len(outputs) == 4
        names = ("class logits", "histogram logits", "word logits")
        for name, a, e in zip(names, outputs[:3], expected[:3]):
            assert a.shape == e.shape == (2, K if name == "word logits" else N_CLASSES), name
            assert_close(a, e)
        assert torch.equal(outputs[3].double(), expected[3].double())
    assert expected[0].abs().max() > 1e-3 and expected[0].std() > 1e-4  # not degenerate
    assert expected[3].sum() >= 2  # at least one word per image


def test_return_cam_matches_authors_network(pair64):
    ref, ours = pair64
    x = _image(seed=2)
    with torch.no_grad():
        logits_e, cams_e = ref(x, return_cam=True)
        logits_a, cams_a = ours(x, return_cam=True)
    assert cams_a.shape == cams_e.shape == (2, N_CLASSES, 5, 4)
    assert_close(logits_a, logits_e)
    assert_close(cams_a, cams_e)
    assert (cams_e > 0).any() and (cams_e == 0).any()  # the ReLU matters


def test_float32_model_matches_float32_reference(reference, loaded):
    """The float32 network as it would run at inference (looser tolerance)."""
    x = _image(seed=3).float()
    with torch.no_grad():
        expected = reference(x, return_cam=True)
        actual = loaded(x, return_cam=True)
    for a, e in zip(actual, expected):
        assert_close(a, e, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# 2. The multi-scale CAM record (scales 1.0, 0.5, 1.5)

def _pyramid(image):
    """(3, H, W) -> one (2, 3, h_s, w_s) batch (image, mirror) per scale, bicubic resize."""
    height, width = image.shape[-2:]
    pyramid = []
    for scale in SCALES:
        size = (int(np.round(height * scale)), int(np.round(width * scale)))
        scaled = image[None] if scale == 1.0 else F.interpolate(image[None], size, mode="bicubic", align_corners=False)
        pyramid.append(torch.cat([scaled, scaled.flip(-1)]))
    return pyramid


def _reference_sums(ref, pyramid, size):
    """The authors' per-image loop up to the class selection: all 20 classes, summed over scales."""
    height, width = size
    strided_size = (math.ceil(height / 4), math.ceil(width / 4))
    strided, high = 0, 0
    with torch.no_grad():
        for pair in pyramid:
            cams = ref.cams(pair)
            cam = torch.max(cams[0], cams[1].flip(-1))
            strided = strided + F.interpolate(cam[None], strided_size, mode="bilinear", align_corners=False)[0]
            high = high + F.interpolate(cam[None], (height, width), mode="bilinear", align_corners=False)[0]
    return strided, high


def _reference_record(strided, high, label):
    valid = torch.nonzero(label)[:, 0]
    strided = strided[valid]
    strided = strided / (F.adaptive_max_pool2d(strided, (1, 1)) + 1e-5)
    high = high[valid]
    high = high / (F.adaptive_max_pool2d(high, (1, 1)) + 1e-5)
    return {"keys": valid, "cam": strided, "high_res": high}


def test_multiscale_cam_record_matches_authors_procedure(pair64):
    ref, ours = pair64
    size = CAM_IMAGE_SIZE
    image = _image(n=1, size=size, seed=4)[0]
    pyramid = _pyramid(image)
    # scale 0.5 gives a 2 x 2 feature map: the authors' HSPP would crash there, their CAMs do not
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(45, 38), (22, 19), (68, 57)]
    strided, high = _reference_sums(ref, pyramid, size)
    # two present classes whose maps are non-zero, so that the max normalisation is exercised
    peaks = high.flatten(1).amax(1)
    present = sorted(torch.argsort(peaks, descending=True)[[0, 2]].tolist())
    assert peaks[present].min() > 0
    label = torch.zeros(N_CLASSES)
    label[present] = 1
    expected = _reference_record(strided, high, label)

    record = multiscale_cam_record(ours, pyramid, label, size, torch.device("cpu"))
    assert set(record) == {"keys", "cam", "high_res"}
    assert record["keys"].dtype == np.int64 and record["keys"].tolist() == present
    assert record["cam"].dtype == np.float32 and record["cam"].shape == (2, 12, 10)
    assert record["high_res"].dtype == np.float32 and record["high_res"].shape == (2, 45, 38)
    assert_close(record["cam"], expected["cam"])
    assert_close(record["high_res"], expected["high_res"])
    assert np.allclose(record["high_res"].reshape(2, -1).max(1), 1, atol=1e-4)
    assert np.allclose(record["cam"].reshape(2, -1).max(1), 1, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 3. Strictness

def _save(state, path):
    torch.save(state, path)
    return path


def test_missing_tensor_is_named(reference, spare_net, tmp_path):
    state = authors_state_dict(reference)
    del state["module.fc_a.weight"], state["module.newly_added.2.weight"]
    path = _save(state, tmp_path / "missing.pth")
    with pytest.raises(UserError, match="missing: hist_classifier.weight") as error:
        load_checkpoint(spare_net, path)
    assert "unexpected" not in str(error.value) and "shape" not in str(error.value)


def test_unexpected_tensor_is_named(reference, spare_net, tmp_path):
    state = authors_state_dict(reference)
    state["module.extra_head.weight"] = torch.zeros(3)
    path = _save(state, tmp_path / "unexpected.pth")
    with pytest.raises(UserError, match="unexpected: extra_head.weight"):
        load_checkpoint(spare_net, path)


def test_word_count_mismatch_is_named(authors_file):
    with pytest.raises(UserError, match=r"shape mismatch.*word_encoder.codebook \(8, 2048\) vs \(16, 2048\)"):
        load_checkpoint(Net(k_words=16), authors_file)


@pytest.mark.parametrize("key, alias", [
    ("module.resnet.layer2.1.bn2.running_var", "module.stage2.0.1.bn2.running_var"),
    ("module.VWE.centroid", "module.newly_added.1.centroid"),
])
def test_disagreeing_aliases_are_rejected(reference, spare_net, tmp_path, key, alias):
    state = authors_state_dict(reference)
    assert torch.equal(state[key], state[alias])
    state[alias] = state[alias].clone()
    state[alias].view(-1)[0] += 1.0
    path = _save(state, tmp_path / "inconsistent.pth")
    with pytest.raises(UserError, match="differ") as error:
        load_checkpoint(spare_net, path)
    assert alias[len("module."):] in str(error.value)


# ---------------------------------------------------------------------------------------------
# 4. Single-GPU save (no "module." prefix)

def test_checkpoint_without_module_prefix_loads(reference, loaded, spare_net, tmp_path):
    path = _save(authors_state_dict(reference, data_parallel=False), tmp_path / "single_gpu.pth")
    model = spare_net
    assert not any(key.startswith("module.") for key in torch.load(path, weights_only=True))
    assert load_checkpoint(model, path) is None
    expected = loaded.state_dict()
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in actual.items():
        assert torch.equal(value, expected[key]), key


# ---------------------------------------------------------------------------------------------
# 5. The authors' VWL code (IJCV 2022): ResNet-101, VWL-L and VWL-M layouts

def _outputs_match(ref, ours, codebook=None, seed=5):
    """Forward outputs (and CAMs) of the reference and of our model agree in float64."""
    ref, ours = copy.deepcopy(ref).double().eval(), copy.deepcopy(ours).double().eval()
    x = _image(seed=seed)
    with torch.no_grad():
        expected = ref(x, codebook=codebook.double()) if codebook is not None else ref(x)
        actual = ours(x)
        expected_cam, actual_cam = ref(x, return_cam=True), ours(x, return_cam=True)
    for a, e in zip(actual[:3], expected[:3]):
        assert_close(a, e)
    assert torch.equal(actual[3].double(), expected[3].double())
    assert expected[0].std() > 1e-4 and expected[3].sum() >= 2  # not degenerate
    for a, e in zip(actual_cam, expected_cam):
        assert_close(a, e)


@pytest.fixture(scope="module")
def memory_bank_reference():
    return randomised_reference(backbone="resnet101", memory_bank=True, seed=SEED + 1)


@pytest.fixture(scope="module")
def memory_bank_files(memory_bank_reference, tmp_path_factory):
    """Saved as their VWL-M training saves an epoch: DataParallel weights, then the codebook next to it
    under dst_path.replace('.pth', '_codebook.npy')."""
    folder = tmp_path_factory.mktemp("authors_vwl_m")
    weights = folder / "res101_cam_ep_5.pth"
    torch.save(authors_state_dict(memory_bank_reference), weights)
    codebook = torch.randn(K, 2048, generator=torch.Generator().manual_seed(7))
    np.save(str(weights).replace(".pth", "_codebook.npy"), codebook)
    return weights, codebook


def _memory_bank_net():
    return Net(backbone="resnet101", k_words=K, codebook="memory_bank", detach_stage2=False)


def test_vwl_m_checkpoint_and_codebook_load(memory_bank_reference, memory_bank_files):
    weights, codebook = memory_bank_files
    saved = torch.load(weights, weights_only=True)  # the layout being tested: no codebook, other indices
    assert not any("centroid" in key for key in saved) and "module.resnet.layer3.22.conv3.weight" in saved
    assert torch.equal(saved["module.newly_added.2.weight"], saved["module.fc_b.weight"])
    model = _memory_bank_net()
    load_checkpoint(model, weights)
    assert bool(model.word_encoder.initialised)
    assert torch.equal(model.word_encoder.codebook, codebook)
    ref = memory_bank_reference.state_dict()
    ours = model.state_dict()
    assert torch.equal(ours["hist_classifier.weight"], ref["fc_a.weight"])
    assert torch.equal(ours["word_classifier.weight"], ref["fc_b.weight"])
    assert torch.equal(ours["backbone.layer3.22.bn2.running_var"], ref["resnet.layer3.22.bn2.running_var"])
    _outputs_match(memory_bank_reference, model, codebook=codebook)


def test_vwl_m_checkpoint_without_codebook_gives_cams(memory_bank_reference, memory_bank_files, tmp_path, capsys):
    weights, _ = memory_bank_files
    alone = tmp_path / "res101_cam.pth"
    alone.write_bytes(weights.read_bytes())
    model = _memory_bank_net()
    load_checkpoint(model, alone)
    note = capsys.readouterr().err
    assert "res101_cam_codebook.npy is not there" in note and "which CAMs do not need" in note
    assert not bool(model.word_encoder.initialised)
    ref = copy.deepcopy(memory_bank_reference).double()
    x = _image(seed=6)
    with torch.no_grad():
        expected = ref(x, return_cam=True)
        actual = copy.deepcopy(model).double().eval()(x, return_cam=True)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    # a learned-codebook model needs the codebook: the error names it
    with pytest.raises(UserError, match=r"missing: word_encoder\.codebook\).*saved with model\.codebook=memory_bank;"):
        load_checkpoint(Net(backbone="resnet101", k_words=K), alone)


def test_vwl_m_codebook_of_another_run_is_named(memory_bank_files, tmp_path):
    weights, _ = memory_bank_files
    copied = tmp_path / "run.pth"
    copied.write_bytes(weights.read_bytes())
    np.save(tmp_path / "run_codebook.npy", np.zeros((K + 1, 2048), np.float32))
    with pytest.raises(UserError, match=r"run_codebook.npy has shape \(9, 2048\).*expected \(8, 2048\)"):
        load_checkpoint(_memory_bank_net(), copied)
    (tmp_path / "run_codebook.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="run_codebook.npy is not a readable .npy file"):
        load_checkpoint(_memory_bank_net(), copied)


def test_vwl_l_resnet101_checkpoint_loads(tmp_path):
    """Their VWL-L file keeps VWE's module names on a ResNet-101, with the HSPP global-mean weight 0."""
    ref = randomised_reference(backbone="resnet101", hspp_gamma=0, seed=SEED + 2)
    path = _save(authors_state_dict(ref), tmp_path / "res101_vwl_l.pth")
    model = Net(backbone="resnet101", k_words=K, decov_weight=1.0, hspp_gamma=0.0)
    load_checkpoint(model, path)
    assert torch.equal(model.word_encoder.codebook, ref.VWE.centroid.detach().flatten(1))
    _outputs_match(ref, model)
    with pytest.raises(UserError, match=r"unexpected: backbone\.layer3\.6\..*saved with model\.backbone=resnet101;"):
        load_checkpoint(Net(backbone="resnet50", k_words=K), path)
