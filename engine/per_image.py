"""The resumable per-image runner: how every stage that writes a file or two per image runs.

The same rules for every such stage (CAMs, pseudo labels, and the stages to come):

- The output folders are checked before any work (writable, or creatable when missing; created with
  their first file) and cleared of the temporary files a killed run left (engine.files.prepare_output_dir).
- A settings manifest (JSON, in the first folder) records what made the files. Files made with
  other settings are never mixed in: that is an error which says to redo them (overwrite) or to
  choose another folder. An overwrite that changes the settings marks the manifest unfinished
  until it ends, so that an interrupted one is not later resumed as if the folder were uniform.
- An image whose outputs all exist and read back is skipped (an interrupted run continues); an
  output that exists but does not read back is reported and redone. Overwrite redoes every image.
- The images are split over the processes (every world_size-th name): each is written once, by
  one process.
- The work: a Dataset whose items DataLoader worker processes produce (decoding, CPU-bound work,
  or the whole job of an image), then an optional `compute` on the device in the main process, then
  an optional `save` on a writer thread, so that the device never waits for the disk (or in a pool of
  processes, for a save that is CPU work itself: the segmentation stage's dense CRF).
- Ctrl-C / SIGTERM: the files started are finished, then the process exits with 130 / 143; the
  next run continues. Every file is written atomically, so a SIGKILL leaves no partial output either.
"""
import contextlib
import dataclasses
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from engine import distributed
from engine.errors import UserError
from engine.files import manifest_changes, merged_manifest, prepare_output_dir, read_manifest, save_json
from engine.parallel import process_context, usable_cores
from engine.signals import GracefulStop, ignore_interrupts

UNFINISHED = "unfinished_overwrite"  # manifest flag while an overwrite replaces files of other settings
IMAGES_KEY = "images"  # the settings' per-image record {name: signature}, when a stage keeps one
PENDING_WRITES = 8  # results waiting for the writer thread, at most
SHOWN_NOTES = 5  # unreadable outputs reported by name, per process (all of them are counted)
CHECK_THREADS = 8  # threads reading existing outputs back (decoding and file reads release the GIL)


@dataclasses.dataclass(frozen=True)
class OutputFolder:
    path: str
    key: str  # the config key that sets it (named in errors)
    contents: str  # what it holds, for messages: "CAM files", "overlays"


@dataclasses.dataclass
class PerImageOutputs:
    """What a per-image stage writes.

    folders: the output folders, the first holding the manifest. outputs(name) -> [(path, read), ...]:
    the files of one image, each with a function that reads it back (raising UserError when it cannot).
    settings: what the files depend on (JSON-serialisable), recorded in `manifest`; mappings are compared
    key by key, so a {name: signature} record under "images" checks the images both runs share (and an
    existing output of an image it does not list is redone: its settings are unknown). overwrite: redo every
    image (the stage's --overwrite; overwrite_key, its config key, is named in the advice too, for
    commands that only pass key=value). explain(previous, current, changed dotted keys) -> sentences
    that say what changed in words (default: "key: old -> new" for each; weights_changes, setting_changes
    and image_changes give a stage's sentences for its weights file, its settings and the per-image
    record). inputs: {settings key: what it records}, for settings that embed the manifest of an input
    folder (e.g. {"cam_settings": "the CAM files in work/cams"}); a change there is said as "<what> were
    remade since".
    """
    folders: list
    manifest: str
    settings: dict
    outputs: Callable
    overwrite: bool = False
    overwrite_key: str = None
    explain: Callable = None
    inputs: dict = dataclasses.field(default_factory=dict)

    @property
    def manifest_path(self):
        return os.path.join(self.folders[0].path, self.manifest)


def _value(record, dotted_key):
    for part in dotted_key.split("."):
        record = record[part]
    return record


def describe_changes(previous, current, changed):
    """The default explanation of changed settings: "key: old -> new" for each."""
    return [f"{key}: {_short(_value(previous, key))} -> {_short(_value(current, key))}" for key in changed]


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def weights_changes(previous, current, changed, key, weights, outputs):
    """The sentence an explain function gives for a changed file record (engine.files.file_record under `key`: the
    weights the outputs were made with), if any: other weights, or the same file rewritten since (retrained
    when newer, else replaced). weights: what the file is ("checkpoint", "relation network"); outputs: what the
    folder holds ("CAMs", "masks")."""
    if key in changed:
        return [f"they come from another {weights}, {previous[key]}"]
    if not any(name in changed for name in (f"{key}_bytes", f"{key}_mtime_ns")):
        return []
    newer = current.get(f"{key}_mtime_ns", 0) > previous.get(f"{key}_mtime_ns", 0)
    return [f"the {weights} {'was retrained' if newer else 'file was replaced'} after these {outputs} were made"]


def setting_changes(previous, current, changed, section, keys):
    """"<section>.<key>: old -> new" for each of `keys` that changed (the stage's own settings, by config key)."""
    return [f"{section}.{key}: {previous[key]!r} -> {current[key]!r}" for key in keys if key in changed]


def image_changes(changed):
    """The sentence an explain function gives for changed entries of the per-image record (IMAGES_KEY), if any."""
    images = [name.split(".", 1)[1] for name in changed if name.startswith(IMAGES_KEY + ".")]
    if not images:
        return []
    return [f"{len(images)} of their images changed since, e.g. {', '.join(images[:3])} (the dataset was "
            f"regenerated or replaced)"]


def check_manifest(spec, previous=None):
    """Whether this run may write into spec's folders, given the `previous` manifest (read when None) -> True
    when it replaces files of other settings (an overwrite), False otherwise; a UserError when files of other
    settings would be mixed in.

    Settings are compared on the keys both records have (engine.files.manifest_changes): a setting that an
    older manifest does not record is not compared, and per-image records compare the images both runs know."""
    folder = spec.folders[0]
    previous = read_manifest(spec.manifest_path) if previous is None else previous
    changed = manifest_changes(previous, spec.settings)
    unfinished = bool(previous.get(UNFINISHED))
    if spec.overwrite:
        return bool(changed) or unfinished
    overwrite = "pass --overwrite" + (f" (or {spec.overwrite_key}=true)" if spec.overwrite_key else "")
    if changed:
        sentences = []
        for key, what in spec.inputs.items():
            if key in changed:
                sentences.append(f"{what} were remade since")
            changed_input = [name.split(".", 1)[1] for name in changed if name.startswith(key + ".")]
            if changed_input:
                sentences.append(f"{what} were remade since, with other {', '.join(changed_input[:3])}")
        own = [name for name in changed if name.split(".")[0] not in spec.inputs]
        if own:
            sentences += (spec.explain or describe_changes)(previous, spec.settings, own) or \
                describe_changes(previous, spec.settings, own)
        raise UserError(f"{folder.path} holds {folder.contents} made with other settings "
                        f"({'; '.join(sentences[:3])}); {overwrite} to redo them, or set another {folder.key}",
                        every_rank=True)
    if unfinished:
        raise UserError(f"{folder.path} holds the {folder.contents} of an interrupted overwrite mixed with older "
                        f"ones; {overwrite} again to finish it", every_rank=True)
    return False


def _state(outputs):
    """'done' (every output reads back), 'new' (some missing, none unreadable) or the first read error."""
    missing = False
    for path, read in outputs:
        if not os.path.exists(path):
            missing = True
            continue
        try:
            read(path)
        except UserError as error:
            return error
    return "new" if missing else "done"


class PerImageRunner:
    """runner = PerImageRunner(ctx, spec); todo = runner.start(names); runner.run(dataset, ...); runner.finish().

    ctx: engine.distributed.DistContext (a plain DistContext() for a single process)."""

    def __init__(self, ctx, spec):
        self.ctx, self.spec = ctx, spec
        self.replacing, self.counts, self.todo, self.finished = False, {}, [], 0

    def start(self, names):
        """Prepare the folders, check and write the manifest -> the indices into `names` of the images this
        process must do (its share, less those already done)."""
        ctx, spec = self.ctx, self.spec
        self.counts, self.todo, self.finished = {"written": 0, "redone": 0, "skipped": 0}, [], 0
        if ctx.is_main:
            for folder in spec.folders:
                prepare_output_dir(folder.path, folder.key)
        previous = read_manifest(spec.manifest_path)
        self.replacing = check_manifest(spec, previous)
        distributed.barrier()  # every rank has read the old manifest before rank 0 replaces it
        if ctx.is_main:
            if self.replacing:
                save_json(spec.manifest_path, {**spec.settings, UNFINISHED: True})
            else:  # same settings: what the previous manifest records of other images stays
                save_json(spec.manifest_path, merged_manifest(previous, spec.settings))

        share = range(ctx.rank, len(names), ctx.world_size)
        # Outputs of images the manifest's record does not list were made before the settings last changed
        # (an overwrite over fewer images leaves the others' files): they are redone, not trusted.
        recorded = previous.get(IMAGES_KEY) if isinstance(previous.get(IMAGES_KEY), dict) else None
        if spec.overwrite:
            states = ["new"] * len(share)
        else:
            with ThreadPoolExecutor(max_workers=min(CHECK_THREADS, usable_cores())) as pool:
                states = list(pool.map(lambda index: "new" if recorded is not None and names[index] not in recorded
                                       else _state(spec.outputs(names[index])), share))
        notes = 0
        for index, state in zip(share, states):
            if state == "done":
                self.counts["skipped"] += 1
                continue
            if isinstance(state, UserError):
                self.counts["redone"] += 1
                notes += 1
                if notes <= SHOWN_NOTES:
                    print(f"note: {state}; redoing it", flush=True)
            else:
                self.counts["written"] += 1
            self.todo.append(index)
        return self.todo

    def run(self, dataset, num_workers=0, compute=None, save=None, desc=None, save_processes=0,
            save_processes_key=None):
        """Produce the todo items of `dataset` (indexed like the names given to start) in `num_workers` loader
        processes; result = compute(item) on this process (if given); save(item, result) on the writer thread
        (if given), or in `save_processes` processes when that is above 0 (save, item and result must then
        pickle; save_processes_key, the config key that sets their number, is named if one dies). Stops early,
        keeping every file it started, on Ctrl-C / SIGTERM."""
        loader = DataLoader(Subset(dataset, self.todo), batch_size=None, shuffle=False, num_workers=num_workers,
                            pin_memory=self.ctx.device.type == "cuda", worker_init_fn=ignore_interrupts)
        progress = tqdm(loader, desc=desc, dynamic_ncols=True, disable=not self.ctx.is_main)
        if save_processes > 0:
            writer = ProcessPoolExecutor(save_processes, mp_context=process_context(), initializer=ignore_interrupts)
        else:
            writer = ThreadPoolExecutor(max_workers=1)
        in_flight = max(PENDING_WRITES, 2 * save_processes)
        with GracefulStop(announce=self.ctx.is_main) as stop, writer:
            pending = []
            try:
                for item in progress:
                    result = compute(item) if compute is not None else None
                    if save is not None:
                        pending.append(writer.submit(save, item, result))
                    else:
                        self.finished += 1
                    if len(pending) >= in_flight:
                        pending.pop(0).result()
                        self.finished += 1
                    if stop.requested:
                        break
                with stop.finishing("writing the files started") if stop.requested else contextlib.nullcontext():
                    for future in pending:  # every file started is finished: the folders hold only whole files
                        future.result()
                        self.finished += 1
            except BrokenProcessPool:
                fewer = f" (set {save_processes_key} lower than {save_processes})" if save_processes_key else ""
                raise UserError(f"a process writing the outputs died, killed by the system (out of memory?); run "
                                f"again with fewer processes{fewer}", every_rank=True) from None
        progress.close()
        if stop.requested:
            if self.ctx.is_main:
                print(f"stopped by {stop.signal_name}: every file started was finished ({self.finished} of "
                      f"{len(self.todo)} images of this process); run the same command to continue",
                      file=sys.stderr, flush=True)
            raise SystemExit(stop.exit_code)

    def finish(self):
        """After every process has run: clear the overwrite flag, print what was written -> the summed counts."""
        ctx, spec = self.ctx, self.spec
        counts = torch.tensor(list(self.counts.values()), device=ctx.device)
        totals = dict(zip(self.counts, distributed.all_reduce_sum(counts).tolist()))  # also waits for every rank
        if ctx.is_main:
            if self.replacing:
                save_json(spec.manifest_path, spec.settings)
            notes = [f"{totals['skipped']} already done, skipped"] if totals["skipped"] else []
            notes += [f"{totals['redone']} unreadable, redone"] if totals["redone"] else []
            places = " and ".join(f"{folder.contents} to {folder.path}" for folder in spec.folders)
            written = totals["written"] + totals["redone"]
            print(f"wrote {written} {places}" + (f" ({'; '.join(notes)})" if notes else ""))
        return totals
