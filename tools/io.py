"""Atomic file output: every file the pipeline writes appears whole or not at all."""
import contextlib
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def save_npy(path, value, allow_pickle=False):
    """np.save, atomically. Pickled objects (e.g. the CAM dict) need allow_pickle=True."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, value, allow_pickle=allow_pickle)


def save_json(path, value):
    with atomic_open(path, "w") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")


def save_text(path, text):
    with atomic_open(path, "w") as handle:
        handle.write(text)


def save_image(path, pil_image, **save_kwargs):
    """Save a PIL image atomically; the format comes from the extension of `path`."""
    image_format = os.path.splitext(path)[1].lstrip(".").upper()
    image_format = {"JPG": "JPEG"}.get(image_format, image_format)
    with atomic_open(path, "wb") as handle:
        pil_image.save(handle, format=image_format, **save_kwargs)
