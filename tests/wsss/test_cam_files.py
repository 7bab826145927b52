"""wsss/cam_files.py: CAM files stored as float16 (cam.dtype) are half the size and read back as float32."""
import os

import numpy as np

from engine.files import save_npy
from wsss.cam_files import load_cam_file, stored_record


def record(rng):
    high_res = rng.random((3, 120, 160), dtype=np.float32)
    return {"keys": np.array([0, 21, 79]), "cam": high_res[:, ::4, ::4].copy(), "high_res": high_res}


def test_float16_files_are_half_the_size_and_read_back_as_float32_within_float16_rounding(tmp_path):
    original = record(np.random.default_rng(0))
    save_npy(str(tmp_path / "32.npy"), stored_record(original, "float32"), allow_pickle=True)
    save_npy(str(tmp_path / "16.npy"), stored_record(original, "float16"), allow_pickle=True)
    assert os.path.getsize(tmp_path / "16.npy") < 0.52 * os.path.getsize(tmp_path / "32.npy")
    stored = np.load(tmp_path / "16.npy", allow_pickle=True).item()
    assert stored["high_res"].dtype == np.float16 and stored["cam"].dtype == np.float16
    for name in ("32.npy", "16.npy"):
        loaded = load_cam_file(str(tmp_path / name))
        assert loaded["high_res"].dtype == np.float32 and loaded["cam"].dtype == np.float32
        assert loaded["keys"].tolist() == [0, 21, 79]
        # maps in [0, 1]: float16's spacing is at most 2^-11 there, so rounding is within 2^-12
        assert np.abs(loaded["high_res"] - original["high_res"]).max() <= 2 ** -12
    assert np.array_equal(load_cam_file(str(tmp_path / "32.npy"))["high_res"], original["high_res"])
