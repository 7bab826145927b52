"""Prepare a COCO 2014 root once: pixel masks, the image-level labels file and the split lists.

    pip install pycocotools                       # COCO only; VOC users never need it
    python -m tools.prepare_coco --root data/coco [--num-workers N] [--crowd object|background|ignore]
                                 [--order area|annotation] [--unannotated skip|write] [--mask-dir DIR]
                                 [--overwrite]

Reads ROOT/annotations/instances_{train,val}2014.json and writes, from the instance annotations:
  ROOT/SegmentationClass/<image stem>.png   palette PNGs, label ids 0..80 (COCO's 80 categories in id
                                            order), 255 where the recipe ignores; the recipe in
                                            coco_masks.json beside them
  ROOT/cls_labels.npy                       {COCO image id: float32[80] multi-hot}, every image
  ROOT/train_all.txt, val_all.txt           every image: 82,783 / 40,504 (IRNet, AMN, RIB, MCTformer)
  ROOT/train_annotated.txt, val_annotated.txt   images with an annotation: 82,081 / 40,137 (ToCo, CLIP-ES)
  ROOT/val_5000.txt                         5,000 evenly spaced images of val_annotated
The defaults (crowd drawn as its class, smaller instances over larger ones, no mask for an image without
annotations) give the mask set most papers since 2023 score on; ReCAM's is --crowd background --order
annotation --unannotated write (docs/coco.md). The end prints the counts and a checksum of each list, so
a number can be told to belong to one set. Runs over every core, resumes where it stopped (masks already
made with the same recipe are kept), writes every file atomically.
"""
import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:
    print("error: run this tool from the repository root as a module: python -m tools.prepare_coco ...",
          file=sys.stderr)
    sys.exit(2)

from tqdm import tqdm

from datasets.coco_masks import CROWD, DEFAULT_RECIPE, ORDER, UNANNOTATED, prepare
from engine.errors import run_main
from engine.parallel import worker_count


def report(summary, seconds):
    recipe = summary["recipe"]
    lines = [f"masks in {summary['mask_dir']}: crowd {recipe['crowd']}, order {recipe['order']}, "
             f"unannotated {recipe['unannotated']}; {summary['masks_written']} written in {seconds:.0f} s"]
    for split in summary["images"]:
        lines.append(f"{split}2014: {summary['images'][split]} images, {summary['annotated'][split]} with an "
                     f"annotation, {summary['crowd_annotations'][split]} crowd annotations, "
                     f"{summary['masks'][split]} masks")
    lines.append("| list | images | sha1 |")
    lines.append("|---|---|---|")
    lines += [f"| {name}.txt | {entry['images']} | {entry['sha1']} |" for name, entry in summary["lists"].items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the COCO 2014 root (train2014/, val2014/, annotations/)")
    parser.add_argument("--crowd", choices=CROWD, default=DEFAULT_RECIPE["crowd"],
                        help="crowd regions: drawn as their class, dropped (background) or 255")
    parser.add_argument("--order", choices=ORDER, default=DEFAULT_RECIPE["order"],
                        help="overlaps: smaller instances on top (area) or later annotations on top")
    parser.add_argument("--unannotated", choices=UNANNOTATED, default=DEFAULT_RECIPE["unannotated"],
                        help="images without annotations: no mask (skip) or an all-background one (write)")
    parser.add_argument("--mask-dir", help="where the masks go (default ROOT/SegmentationClass)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes (default: every usable core; 0: this one)")
    parser.add_argument("--overwrite", action="store_true", help="remake every mask (another recipe, say)")
    args = parser.parse_args(argv)
    workers = worker_count(args.num_workers, "--num-workers")
    recipe = {"crowd": args.crowd, "order": args.order, "unannotated": args.unannotated}
    start = time.perf_counter()
    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="masks", unit="img", mininterval=1.0, disable=not sys.stderr.isatty())
        bar.update(1)

    summary = prepare(args.root, recipe, args.mask_dir and os.path.abspath(args.mask_dir), workers,
                      args.overwrite, progress=progress)
    if bar is not None:
        bar.close()
    print(report(summary, time.perf_counter() - start))


if __name__ == "__main__":
    run_main(main)
