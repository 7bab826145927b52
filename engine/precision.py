"""Mixed precision switches of the config (a stage's amp key): off | bf16 | fp16."""
import torch

from engine.errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_name(value):
    """An amp value as its name: YAML reads a bare `off` as false."""
    return "off" if value is False else value


def amp_dtype(value, key):
    """The autocast dtype a train.amp / cam.amp value names (None: full precision)."""
    value = amp_name(value)
    if value not in AMP_DTYPES:
        raise UserError(f"{key}={value!r}: choose one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[value]


def autocast(device, dtype):
    """torch.autocast on `device` in `dtype`; a no-op context when dtype is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
