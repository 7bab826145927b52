"""engine/per_image.py, the resumable per-image runner: manifest rules, skip and redo, overwrite, processes."""
import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from engine.distributed import DistContext
from engine.errors import UserError
from engine.files import save_npy
from engine.per_image import UNFINISHED, OutputFolder, PerImageOutputs, PerImageRunner, check_manifest

NAMES = [f"image{index}" for index in range(6)]


def read_npy(path):
    try:
        return np.load(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is corrupt ({type(error).__name__})") from None


def spec(folder, settings=None, overwrite=False):
    return PerImageOutputs(folders=[OutputFolder(str(folder), "out.dir", "arrays")], manifest="settings.json",
                           settings=settings or {"scale": 2}, overwrite=overwrite,
                           outputs=lambda name: [(os.path.join(folder, name + ".npy"), read_npy)])


class Numbers(Dataset):
    """Item i: (name, i); what a loader worker would decode."""

    def __len__(self):
        return len(NAMES)

    def __getitem__(self, index):
        return {"name": NAMES[index], "value": torch.tensor(float(index))}


def run(folder, ctx=None, names=NAMES, num_workers=0, **spec_options):
    runner = PerImageRunner(ctx or DistContext(), spec(folder, **spec_options))
    todo = runner.start(names)
    scale = runner.spec.settings["scale"]
    runner.run(Numbers(), num_workers, compute=lambda item: item["value"] * scale,
               save=lambda item, result: save_npy(os.path.join(folder, item["name"] + ".npy"), result.numpy()))
    return todo, runner.finish()


def test_writes_every_image_then_skips_them_and_redoes_missing_and_corrupt(tmp_path, capsys):
    todo, counts = run(tmp_path, num_workers=2)
    assert todo == list(range(6)) and counts == {"written": 6, "redone": 0, "skipped": 0}
    assert [float(np.load(tmp_path / f"{name}.npy")) for name in NAMES] == [0, 2, 4, 6, 8, 10]
    assert json.load(open(tmp_path / "settings.json")) == {"scale": 2}
    assert f"wrote 6 arrays to {tmp_path}" in capsys.readouterr().out

    (tmp_path / "image1.npy").unlink()
    (tmp_path / "image4.npy").write_bytes(b"half a file")
    todo, counts = run(tmp_path)
    assert todo == [1, 4] and counts == {"written": 1, "redone": 1, "skipped": 4}
    out = capsys.readouterr().out
    assert "image4.npy is corrupt" in out and "(4 already done, skipped; 1 unreadable, redone)" in out
    assert float(np.load(tmp_path / "image4.npy")) == 8


def test_outputs_of_other_settings_are_not_mixed_in(tmp_path):
    run(tmp_path)
    with pytest.raises(UserError, match=rf"{tmp_path} holds arrays made with other settings \(scale: 2 -> 3\); "
                                        r"pass --overwrite to redo them, or set another out.dir"):
        run(tmp_path, settings={"scale": 3})
    todo, _ = run(tmp_path, settings={"scale": 3}, overwrite=True)
    assert todo == list(range(6)) and float(np.load(tmp_path / "image5.npy")) == 15
    assert json.load(open(tmp_path / "settings.json")) == {"scale": 3}  # the overwrite finished: no flag


def test_per_image_records_cover_the_images_of_every_run_and_inputs_are_named(tmp_path):
    run(tmp_path, names=NAMES[:3], settings={"scale": 2, "images": {name: 1 for name in NAMES[:3]}})
    todo, _ = run(tmp_path, settings={"scale": 2, "images": {name: 1 for name in NAMES}})  # more images: fine
    assert todo == [3, 4, 5]
    assert json.load(open(tmp_path / "settings.json"))["images"] == {name: 1 for name in NAMES}
    with pytest.raises(UserError, match=r"other settings \(images.image1: 1 -> 2\)"):
        run(tmp_path, names=NAMES[:2], settings={"scale": 2, "images": {"image0": 1, "image1": 2}})

    inputs = {"scale": 2, "cams": {"checkpoint": "a.pth", "images": {"x": 1}}}
    run(tmp_path / "labels", settings=inputs)
    upstream = spec(tmp_path / "labels", {"scale": 2, "cams": {"checkpoint": "b.pth", "images": {"x": 1}}})
    upstream.inputs = {"cams": "the CAM files in cams/"}
    with pytest.raises(UserError, match=r"\(the CAM files in cams/ were remade since, with other checkpoint\)"):
        check_manifest(upstream)


def test_files_an_overwrite_over_fewer_images_left_behind_are_redone(tmp_path):
    images = {name: 1 for name in NAMES}
    run(tmp_path, settings={"scale": 2, "images": images})
    todo, _ = run(tmp_path, names=NAMES[:2], settings={"scale": 3, "images": {"image0": 1, "image1": 1}},
                  overwrite=True)  # e.g. CAMs of a retrained checkpoint, for a smaller split
    assert todo == [0, 1]
    todo, _ = run(tmp_path, settings={"scale": 3, "images": images})  # the whole split, no overwrite
    assert todo == [2, 3, 4, 5]  # their files are of scale 2: redone, not skipped
    assert float(np.load(tmp_path / "image5.npy")) == 15


def test_an_interrupted_overwrite_is_not_resumed_as_if_complete(tmp_path):
    settings = {"scale": 3}
    (tmp_path / "settings.json").write_text(json.dumps({**settings, UNFINISHED: True}))
    with pytest.raises(UserError, match="interrupted overwrite mixed with older ones; pass --overwrite again"):
        check_manifest(spec(tmp_path, settings))
    assert check_manifest(spec(tmp_path, settings, overwrite=True))  # the overwrite run keeps the flag meanwhile
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    assert not check_manifest(spec(tmp_path, settings, overwrite=True))  # same settings: nothing to replace
    assert check_manifest(spec(tmp_path, {"scale": 2}, overwrite=True))


def test_a_manifest_that_is_not_json_is_one_error(tmp_path):
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(UserError, match="settings.json is not a settings manifest.*delete it, or redo the folder"):
        run(tmp_path)


def test_processes_share_the_images(tmp_path):
    shares = [PerImageRunner(DistContext(rank, 3), spec(tmp_path)).start(NAMES) for rank in range(3)]
    assert shares == [[0, 3], [1, 4], [2, 5]]


def test_a_killed_runs_temporaries_are_removed_before_work(tmp_path):
    stale = tmp_path / ".image0.npy.k1ll3d.partial.tmp"
    stale.write_bytes(b"half")
    run(tmp_path)
    assert not stale.exists()
