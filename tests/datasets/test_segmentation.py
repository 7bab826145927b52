"""datasets/segmentation.py: images and label maps augmented alike (rescale, flip, crop with the same offsets),
the 0 / 255 canvas, determinism per (seed, epoch, index), label values, refused labels."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import transforms as T
from datasets.files import IGNORE_INDEX, bit_palette, save_label_png
from datasets.segmentation import SegmentationDataset, augment_pair, deeplab_augment, irnet_augmentation
from datasets.transforms import random_crop_pair
from engine.errors import UserError

N_CLASSES = 20
BLOCK = 10  # a 40 x 50 image is 4 x 5 blocks of 10 px, block b has class id b + 1 and its own colour
COLOURS = np.array(bit_palette(), dtype=np.uint8).reshape(-1, 3)[1:N_CLASSES + 1]  # colour of class id c: c - 1


class Folder:
    """The part of a source the dataset uses: image_path(name)."""

    def __init__(self, root):
        self.root = root

    def image_path(self, name):
        return str(self.root / "images" / f"{name}.png")


def blocks(height, width):
    """(H, W) class ids 1..20: one per BLOCK x BLOCK block, none repeated (so flips and shifts show)."""
    rows, columns = np.mgrid[:height, :width]
    return ((rows // BLOCK) * (width // BLOCK) + columns // BLOCK + 1).astype(np.uint8)


def write_pair(root, name, label, image=None):
    (root / "images").mkdir(exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    image = COLOURS[np.clip(label, 1, N_CLASSES) - 1] if image is None else image
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    save_label_png(str(root / "labels" / f"{name}.png"), label)


def dataset(root, names, crop_size, seed=0, **options):
    return SegmentationDataset(Folder(root), names, str(root / "labels"), N_CLASSES,
                               irnet_augmentation(crop_size, **options), seed)


def decode(img):
    """(3, S, S) normalised image -> (S, S) class id of the nearest block colour."""
    rgb = (img.numpy().transpose(1, 2, 0) * T.IMAGENET_STD + T.IMAGENET_MEAN) * 255
    return np.linalg.norm(rgb[:, :, None] - COLOURS.astype(np.float32), axis=-1).argmin(axis=-1) + 1


def interior(label):
    """Pixels whose 3 x 3 neighbourhood holds one class id (not 255): away from block edges and the canvas."""
    padded = np.pad(label, 1, constant_values=IGNORE_INDEX)
    same = np.ones(label.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            same &= padded[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
    return same & (label != IGNORE_INDEX)


@pytest.mark.parametrize("crop_size", [24, 64], ids=["crop_inside_image", "image_inside_canvas"])
def test_label_follows_its_pixels_through_rescale_flip_and_crop(tmp_path, crop_size):
    write_pair(tmp_path, "a", blocks(40, 50))
    data = dataset(tmp_path, ["a"], crop_size)
    flips = set()
    for epoch in range(12):
        data.set_epoch(epoch)
        item = data[0]
        label = item["label"].numpy()
        assert item["name"] == "a" and item["img"].shape == (3, crop_size, crop_size)
        assert item["img"].dtype == torch.float32 and label.shape == (crop_size, crop_size) and label.dtype == np.uint8
        inside = interior(label)
        assert inside.sum() > 20 and np.array_equal(decode(item["img"])[inside], label[inside])
        # Left-right order of two horizontally adjacent blocks tells whether this sample was flipped.
        row = label[inside.any(axis=1)][0]
        ids = [value for value in row if value != IGNORE_INDEX]
        flips.add(ids[0] > ids[-1])
    assert flips == {True, False}


def test_small_image_sits_in_a_canvas_of_0_and_255(tmp_path):
    write_pair(tmp_path, "small", blocks(20, 30))
    data = dataset(tmp_path, ["small"], 64)
    sizes = set()
    for epoch in range(10):
        data.set_epoch(epoch)
        item = data[0]
        label, img = item["label"].numpy(), item["img"].numpy()
        pasted = label != IGNORE_INDEX
        rows, columns = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
        height, width = len(rows), len(columns)
        assert pasted.sum() == height * width  # one rectangle: the rescaled image
        assert (img[:, ~pasted] == 0).all() and (img[:, pasted] != 0).all()  # canvas 0 after normalisation
        scale = height / 20
        assert 0.5 - 1 / 40 <= scale <= 1.5 + 1 / 40 and abs(width - 30 * scale) <= 1
        sizes.add((height, width))
    assert len(sizes) > 3  # the scale is drawn per sample


def test_labels_keep_their_values_and_unsure_pixels(tmp_path):
    label = blocks(40, 50)
    label[15:25, 20:30] = IGNORE_INDEX  # an unsure region inside the image
    write_pair(tmp_path, "a", label)
    data = dataset(tmp_path, ["a"], 48)
    for epoch in range(6):
        data.set_epoch(epoch)
        values = set(np.unique(data[0]["label"].numpy()).tolist())
        assert values <= set(np.unique(label).tolist()) and IGNORE_INDEX in values  # nearest: no blends


def test_same_seed_epoch_and_index_give_the_same_sample(tmp_path):
    for name in ("a", "b"):
        write_pair(tmp_path, name, blocks(40, 50))
    first, second = dataset(tmp_path, ["a", "b"], 32, seed=5), dataset(tmp_path, ["a", "b"], 32, seed=5)
    first.set_epoch(2)
    second.set_epoch(2)
    one, two = first[1], second[1]
    assert one["name"] == "b" and (one["img"] == two["img"]).all() and (one["label"] == two["label"]).all()
    second.set_epoch(3)
    assert not (second[1]["img"] == one["img"]).all()
    other_seed, default_seed = dataset(tmp_path, ["a", "b"], 32, seed=6), dataset(tmp_path, ["a", "b"], 32)
    assert not (other_seed[1]["img"] == default_seed[1]["img"]).all()


def test_crop_pair_takes_random_crops_offsets_for_both():
    image = np.arange(30 * 20 * 3, dtype=np.float32).reshape(30, 20, 3)
    label = np.arange(30 * 20).reshape(30, 20) % 200
    for seed in range(5):
        cropped, cropped_label = random_crop_pair(image, label.astype(np.uint8), 25, np.random.default_rng(seed))
        assert np.array_equal(cropped, T.random_crop(image, 25, np.random.default_rng(seed)))
        expected = T.random_crop(label[..., None].astype(np.float32), 25, np.random.default_rng(seed), fill=255)
        assert np.array_equal(cropped_label, expected[..., 0].astype(np.uint8))


def test_augment_without_rescale_or_flip_is_a_normalised_crop():
    image = COLOURS[blocks(40, 50) - 1]
    columns = np.tile(np.arange(50, dtype=np.uint8), (40, 1))  # the label is the column: it gives the offset
    for seed in range(3):
        out, label = augment_pair(image, columns, 40, (1.0, 1.0), False, np.random.default_rng(seed))
        left = int(label[0, 0])
        assert out.shape == (40, 40, 3) and np.array_equal(label, columns[:, left:left + 40])
        assert np.array_equal(out, T.normalize(image)[:, left:left + 40])


def test_refused_labels_name_the_file(tmp_path):
    write_pair(tmp_path, "big", blocks(40, 50))
    save_label_png(str(tmp_path / "labels" / "big.png"), blocks(40, 40))  # the image is 50 wide
    write_pair(tmp_path, "stray", np.full((20, 20), 21, dtype=np.uint8), image=np.zeros((20, 20, 3), np.uint8))
    data = dataset(tmp_path, ["big", "stray", "none"], 16)
    with pytest.raises(UserError, match=r"label .*big.png is 40x40 but its image .*big.png is 50x40; make the"):
        data[0]
    with pytest.raises(UserError, match=r"label .*stray.png holds 21, not a class id \(0..20\) nor 255"):
        data[1]
    write_pair(tmp_path, "none", blocks(20, 20))
    (tmp_path / "labels" / "none.png").unlink()
    with pytest.raises(UserError, match=r"label .*none.png does not exist"):
        data[2]


# ---------------------------------------------------------------------------------------------
# deeplab-pytorch's augmentation (the segmentation network's training set)

def test_deeplab_augment_scales_by_a_chosen_factor_and_pads_at_the_bottom_and_right():
    label = blocks(20, 30)
    image = COLOURS[label - 1]
    seen = set()
    for seed in range(30):
        out, crop = deeplab_augment(image, label, 64, (0.5, 1.0, 1.5), False, "caffe", np.random.default_rng(seed))
        assert out.shape == (64, 64, 3) and out.dtype == np.float32 and crop.shape == (64, 64)
        rows, columns = np.nonzero(crop != IGNORE_INDEX)
        height, width = rows.max() + 1, columns.max() + 1
        assert rows.min() == 0 and columns.min() == 0  # the image sits top-left, the padding below and right
        assert (height, width) in {(10, 15), (20, 30), (30, 45)}
        seen.add(height)
        assert np.all(out[height:] == 0) and np.all(out[:, width:] == 0)  # the mean colour after subtraction
        scale = height / 20
        expected = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
        assert np.array_equal(crop[:height, :width], expected) and scale in (0.5, 1.0, 1.5)
    assert seen == {10, 20, 30}


def test_deeplab_augment_crops_at_random_flips_and_normalises_per_layout():
    label = blocks(40, 50)
    image = COLOURS[label - 1]
    windows = set()
    for seed in range(20):
        out, crop = deeplab_augment(image, label, 24, (1.0,), True, "caffe", np.random.default_rng(seed))
        matches = [(top, left, flipped) for top in range(17) for left in range(27) for flipped in (False, True)
                   if np.array_equal((label[:, ::-1] if flipped else label)[top:top + 24, left:left + 24], crop)]
        assert matches, "the crop is a window of the (flipped) label"
        top, left, flipped = matches[0]
        source = (image[:, ::-1] if flipped else image)[top:top + 24, left:left + 24]
        assert np.allclose(out, source[..., ::-1] - T.CAFFE_MEAN_BGR)  # BGR, 0-255, minus the mean
        windows.add(matches[0])
    assert len(windows) > 10 and {flipped for _, _, flipped in windows} == {False, True}
    out, crop = deeplab_augment(image, label, 24, (1.0,), False, "imagenet", np.random.default_rng(0))
    top, left = next((top, left) for top in range(17) for left in range(27)
                     if np.array_equal(label[top:top + 24, left:left + 24], crop))
    assert np.allclose(out, T.normalize(image)[top:top + 24, left:left + 24], atol=1e-5)  # RGB, ImageNet's mean, std


def test_images_resize_bilinearly_without_antialiasing():
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3)).astype(np.uint8)
    resized = T.resize_bilinear(image, (4, 6))
    chw = torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1))[None]
    expected = torch.nn.functional.interpolate(chw, size=(4, 6), mode="bilinear", align_corners=False)
    assert np.allclose(resized, expected[0].permute(1, 2, 0).numpy())
    # OpenCV's INTER_LINEAR grid: output pixel 0 of a 2x shrink samples between input pixels 0 and 1, no antialias
    assert T.resize_bilinear(image[:, :12], (9, 6))[0, 0, 0] == pytest.approx((float(image[0, 0, 0]) +
                                                                                float(image[0, 1, 0])) / 2)
