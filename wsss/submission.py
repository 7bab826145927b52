"""The PASCAL VOC evaluation server's format for the test set: one palette PNG per image (class ids 0..20, the
image's size) in results/VOC2012/Segmentation/<comp>_test_cls/, packed as a .tar.gz of results/. comp6 is the
track for methods trained with outside data (ImageNet / COCO pre-training); comp5 for VOC data alone."""
import os
import tarfile

from engine.errors import UserError
from engine.files import atomic_open

SUBMISSION_FOLDER = os.path.join("results", "VOC2012", "Segmentation")
TEST_HELP = ("the VOC2012 test images come from the evaluation server's VOC2012test.tar "
             "(http://host.robots.ox.ac.uk:8080/, after registering); extract it so that its JPEGImages/ joins "
             "dataset.root_dir's")


def submission_folder(top, comp="comp6"):
    """Where the server wants the PNGs of a segmentation entry: <top>/results/VOC2012/Segmentation/<comp>_test_cls."""
    return os.path.join(top, SUBMISSION_FOLDER, f"{comp}_test_cls")


def submission_names(source, split):
    """The names of the test split, every image there (else one error saying where the test images come from)."""
    if source.name != "voc":
        raise UserError(f"--submission makes an entry for the PASCAL VOC evaluation server; dataset.name is "
                        f"{source.name}, whose papers report val (python eval_seg.py scores it)")
    if split is None:
        raise UserError("config key seg.submission.split is missing; set it to the test split (datasets/voc/test.txt)")
    names = source.read_names(split)
    missing = [name for name in names if not os.path.isfile(source.image_path(name))]
    if missing:
        which = "none" if len(missing) == len(names) else f"{len(names) - len(missing)}"
        raise UserError(f"seg.submission.split {split} lists {len(names)} images and {which} of them are in "
                        f"{os.path.dirname(source.image_path(names[0]))} (missing e.g. {', '.join(missing[:3])}); "
                        f"{TEST_HELP}")
    return names


def pack_submission(top, folder, names, archive):
    """results/ as the server takes it: results/VOC2012/Segmentation/<comp>_test_cls/<name>.png for each name (no
    other file; `top` holds results/, `folder` the PNGs), in a .tar.gz written atomically."""
    with atomic_open(archive, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
        for name in names:
            path = os.path.join(folder, name + ".png")
            tar.add(path, arcname=os.path.relpath(path, top))
