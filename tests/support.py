"""What tests share: running the project's commands in a subprocess, and checking how they ended."""
import os
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = "configs/synthetic.yaml"
# the commands that take --gpu
RUNS_A_NETWORK = ("train_cam.py", "infer_cam.py", "train_irn.py", "infer_irn.py", "train_seg.py", "infer_seg.py")


def command(*args, torchrun=0):
    """`python ARGS` (or `torchrun --nproc_per_node N ARGS`) with this interpreter."""
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun), *args]
    return [sys.executable, *args]


def stage(script, *overrides, config=DEMO_CONFIG):
    """The arguments of a stage (a script, or `-m tools.<name>`) with `config` and overrides, on the CPU."""
    script_args = script.split() if script.startswith("-m ") else [script]
    return [*script_args, "--config", config, *(["--gpu", "cpu"] if script in RUNS_A_NETWORK else []), *overrides]


def _file_size_limit(limit_bytes):
    def preexec():  # writes past the limit fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return preexec


def run(*args, torchrun=0, env=None, limit_file_bytes=None, timeout=600):
    """Run `python ARGS` from the repository root -> the finished process (stdout, stderr as text).
    env: variables added to this process's; limit_file_bytes: the largest file it may write."""
    preexec = _file_size_limit(limit_file_bytes) if limit_file_bytes is not None else None
    return subprocess.run(command(*args, torchrun=torchrun), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, preexec_fn=preexec)


def start(*args, env=None):
    """Start `python ARGS` from the repository root, without waiting -> the Popen (pipes for stdout, stderr)."""
    return subprocess.Popen(command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def kill_after_first_checkpoint(args, run_dir, env=None, timeout=300):
    """Start `python ARGS` (a training), SIGKILL it as soon as run_dir/checkpoints/last.pth appears -> the step
    saved there. No handler runs: what a power loss leaves. Asserts that the run had not finished by then."""
    import torch

    process = start(*args, env=env)
    last = run_dir / "checkpoints" / "last.pth"
    deadline = time.time() + timeout
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (run_dir / "checkpoints" / "final.pth").exists(), "the run finished before it could be killed"
    return torch.load(last, weights_only=True)["step"]


def run_stage(script, *overrides, config=DEMO_CONFIG, **run_options):
    """run(*stage(...)): a stage on the CPU -> the finished process."""
    return run(*stage(script, *overrides, config=config), **run_options)


def assert_ok(result):
    """A finished subprocess succeeded -> its stdout."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_clean_error(result, *fragments):
    """A finished subprocess ended on one `error:` line holding every fragment, exit code 2, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def temporaries(folder):
    """The temporary files left anywhere below `folder`."""
    return [name for _, _, files in os.walk(folder) for name in files if name.endswith(".tmp")]
