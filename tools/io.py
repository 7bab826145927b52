"""Atomic file output: every file the pipeline writes appears whole or not at all."""
import contextlib
import errno
import functools
import io
import json
import os
import tempfile

import numpy as np

from tools.errors import UserError


# Errors of the storage rather than of the program: the disk is full, read-only, not ours...
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ENOTDIR, errno.EEXIST}


def _storage_error(path, error, action="write"):
    return UserError(f"cannot {action} {path} ({error.strerror or error}); free disk space, fix the folder's "
                     f"permissions or choose another output folder (no partial file was left)")


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic. A storage
    failure (full disk, permissions, file size limit) becomes a UserError naming `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as error:
        raise _storage_error(path, error) from None
    try:
        os.chmod(tmp_path, _new_file_mode())  # mkstemp makes 0600; give the result the usual permissions
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            raise _storage_error(path, error) from None
        raise


def remove_stale_temporaries(folder):
    """Delete the temporary files atomic_open left in `folder` when a process was killed (SIGKILL, power
    loss) mid-write; call it before any process writes there again. Returns how many were removed."""
    if not os.path.isdir(folder):
        return 0
    removed = 0
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def ensure_writable_dir(folder, key):
    """Create `folder` if needed and check a file can be written there, before any long work starts."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write_test.")
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise UserError(f"{key}: cannot write in {folder} ({error.strerror or error}); fix its permissions "
                        f"or choose another folder") from None


@functools.lru_cache(maxsize=None)
def _new_file_mode():
    """0o666 minus the process umask: the mode open() would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def missing_files(names, folder, suffix):
    """The names among `names` that have no file <folder>/<name><suffix>."""
    return [name for name in names if not os.path.isfile(os.path.join(folder, name + suffix))]


def save_npy(path, value, allow_pickle=False):
    """np.save, atomically. Pickled objects (e.g. the CAM dict) need allow_pickle=True."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, value, allow_pickle=allow_pickle)


def save_torch(path, value):
    """torch.save, atomically. The bytes are made in memory first: torch's own writer reports a
    failed write (full disk) as a bare RuntimeError, our write as the OSError it is."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


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


def settings_changes(manifest_path, settings):
    """["key: old -> new", ...] for the keys of `settings` that differ from the JSON manifest at
    `manifest_path` (a settings file a stage keeps beside its outputs); [] when there is no manifest."""
    if not os.path.isfile(manifest_path):
        return []
    with open(manifest_path) as handle:
        previous = json.load(handle)
    return [f"{key}: {previous.get(key)!r} -> {value!r}" for key, value in settings.items()
            if previous.get(key) != value]
