"""Files: every file the pipeline writes appears whole or not at all; output folders checked before work starts."""
import contextlib
import errno
import functools
import json
import os
import tempfile

import numpy as np

from engine.errors import UserError


# Errors of the storage rather than of the program: the disk is full, read-only, not ours...
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ENOTDIR, errno.EEXIST}


# The names of atomic_open's temporary files (and of the write probe) end with this, so that the
# leftovers of a killed run can be told from anybody else's files and deleted.
TEMP_SUFFIX = ".partial.tmp"


@contextlib.contextmanager
def storage_errors_named(path):
    """An OSError of the storage (full disk, permissions, file size limit) while writing `path`
    becomes a UserError that names `path`; other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in _STORAGE_ERRNOS:
            raise
        raise UserError(f"cannot write {path} ({error.strerror or error}); free disk space, fix the folder's "
                        f"permissions or choose another output folder (no partial file was left)") from None


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic. A storage
    failure (full disk, permissions, file size limit) becomes a UserError naming `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    with storage_errors_named(path):
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=TEMP_SUFFIX)
        try:
            os.chmod(tmp_path, _new_file_mode())  # mkstemp makes 0600; give the result the usual permissions
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_path)
            raise


def prepare_output_dir(folder, key):
    """Before a stage writes into `folder` (named by config key `key`): check that files can be written there
    (so a long run does not fail at its end) and delete the temporary files a killed run (SIGKILL, power
    loss) left in it mid-write. Call it before any process writes there.

    The folder is not created here but by the first file written into it (atomic_open), so a run that
    stops before writing anything leaves no empty folder behind; a folder not there yet is checked by
    writing into its nearest existing parent, which must be a folder."""
    existing = os.path.abspath(folder)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        if os.path.islink(existing) and not os.path.exists(existing):
            raise FileNotFoundError(errno.ENOENT, f"{existing} is a broken symbolic link to {os.readlink(existing)}")
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write_test.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise UserError(f"{key}: cannot write in {folder} ({error.strerror or error}); fix its permissions "
                        f"or choose another folder") from None
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


@functools.cache
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


def read_manifest(path):
    """The settings manifest at `path` as a dict; {} when there is none (a new folder, or files made by other
    code, which are taken as they are)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a settings manifest (a JSON object); delete it, or redo the folder with "
                        f"--overwrite of the stage that writes it", every_rank=True)
    return manifest


def file_record(path, key):
    """What identifies the file an output was made from (a checkpoint): {key: its absolute path, key_bytes: its
    size, key_mtime_ns: its modification time}. manifest_changes takes a file whose size and time are the same
    under another path for the same file, moved or copied with its time (cp -p, mv)."""
    stat = os.stat(path)
    return {key: os.path.abspath(path), f"{key}_bytes": stat.st_size, f"{key}_mtime_ns": stat.st_mtime_ns}


def _moved_file(previous, current, key):
    return all(f"{key}_{part}" in previous and previous[f"{key}_{part}"] == current.get(f"{key}_{part}")
               for part in ("bytes", "mtime_ns"))


def manifest_changes(previous, current, prefix=""):
    """The dotted keys whose values differ between two settings records, compared on the keys both have.

    Mappings are compared the same way, key by key: a record of one entry per image ({name: signature})
    then compares the images both runs know (a run over a subset or a superset of the images is fine),
    and a record embedded from another folder's manifest tolerates keys that one version of the
    project writes and another does not (or records in another form: a digest then, a mapping now). The
    path of a file_record whose size and time did not change is no change (the work folder was moved)."""
    changed = []
    for key in current.keys() & previous.keys():
        old, new = previous[key], current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            changed += manifest_changes(old, new, f"{prefix}{key}.")
        elif (isinstance(old, dict) or isinstance(new, dict)) and old is not None and new is not None:
            continue  # one version's record and another's format of it (a digest, a mapping): not comparable
        elif old != new and not _moved_file(previous, current, key):
            changed.append(f"{prefix}{key}")
    return sorted(changed)


def merged_manifest(previous, current):
    """`current`, with the entries that only `previous` has in the mappings both record (e.g. the images of an
    earlier run over a larger split, whose files are still in the folder)."""
    merged = dict(current)
    for key in previous.keys() & current.keys():
        if isinstance(previous[key], dict) and isinstance(current[key], dict):
            merged[key] = {**previous[key], **merged_manifest(previous[key], current[key])}
    return merged
