"""Where images and labels come from: sources chosen by `dataset.name`, the stage datasets over them,
transforms and the synthetic generator.

A source (datasets/voc.py VOC, datasets/coco.py COCO; what they share: datasets/source.py) is built
from dataset.root_dir and dataset.cls_labels and gives: class_names and n_classes (foreground),
table_columns (background first, for score tables), palette (768 ints, for label PNGs), help (where the
data comes from, ending errors), image_path(name), label_key(name) (its key in the labels file),
check_root(), read_names(split file), read_split(split file, key) (images checked to exist),
load_cls_labels() and labels_for(names) (image-level multi-hot labels), image_signatures(names)
({name: what identifies its image file}) and fingerprint(names) (a digest of them): what outputs record
to notice a regenerated dataset.
"""
from datasets.coco import COCO
from datasets.voc import VOC
from engine.errors import UserError

SOURCES = {"voc": VOC, "coco": COCO}


def build_source(cfg):
    """The source the config's dataset section names (dataset.name, voc when absent), at dataset.root_dir."""
    name = cfg.get("dataset.name", "voc")
    if name not in SOURCES:
        raise UserError(f"dataset.name: unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name](cfg.dataset.root_dir, cfg.get("dataset.cls_labels"))
    n_classes = cfg.get("dataset.n_classes")
    if n_classes is not None and n_classes != source.n_classes:
        raise UserError(f"dataset.n_classes is {n_classes} but {name} has {source.n_classes} classes; "
                        f"remove the key (the count comes from the dataset) or set {source.n_classes}")
    return source
