"""engine/files.py, atomic writes: a file appears whole or not at all, with the usual permissions."""
import os
import stat

import pytest

from engine.errors import UserError
from engine.files import atomic_open, manifest_changes, merged_manifest, prepare_output_dir, save_json


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_existing_file_survives_a_failed_rewrite(tmp_path):
    target = tmp_path / "scores.json"
    save_json(target, {"miou": 1.0})
    with pytest.raises(TypeError):
        save_json(target, {"miou": object()})  # not serialisable: fails half-way
    assert target.read_text().startswith('{\n  "miou": 1.0')
    assert os.listdir(tmp_path) == ["scores.json"]


def test_new_files_get_the_umask_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    save_json(tmp_path / "a.json", {})
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_manifests_compare_the_keys_both_record():
    previous = {"scale": 2, "images": {"a": 10, "b": 11}, "input": {"checkpoint": "x", "old_key": 1}}
    # Another split (names added or left out), a key one version records and another does not: no change.
    assert manifest_changes(previous, {"scale": 2, "images": {"b": 11, "c": 12}, "input": {"checkpoint": "x"},
                                       "new_key": 5}) == []
    assert manifest_changes(previous, {"scale": 3, "images": {"a": 10, "b": 99}, "input": {"checkpoint": "y"}}) == \
        ["images.b", "input.checkpoint", "scale"]
    assert manifest_changes({"input": None}, {"input": {"checkpoint": "x"}}) == ["input"]


def test_a_merged_manifest_keeps_the_images_of_earlier_runs():
    merged = merged_manifest({"scale": 2, "images": {"a": 10, "b": 11}, "gone": 1}, {"scale": 2, "images": {"b": 12}})
    assert merged == {"scale": 2, "images": {"a": 10, "b": 12}}


def test_an_output_folder_is_checked_through_its_nearest_existing_parent(tmp_path):
    prepare_output_dir(str(tmp_path / "new" / "deeper"), "out.dir")
    assert not (tmp_path / "new").exists()  # created by the first file written, not before
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=rf"out.dir: cannot write in {tmp_path}/file/sub \({tmp_path}/file is a file\)"):
        prepare_output_dir(str(tmp_path / "file" / "sub"), "out.dir")
    os.symlink(tmp_path / "gone", tmp_path / "link")
    with pytest.raises(UserError, match=r"link is a broken symbolic link to .*gone\)"):
        prepare_output_dir(str(tmp_path / "link" / "cams"), "exp.cam_dir")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / ".x.npy.partial.tmp").write_text("half")
    prepare_output_dir(str(tmp_path / "done"), "out.dir")
    assert os.listdir(tmp_path / "done") == []
