"""wsss/schema.py: every key of every shipped config has a rule, and the rules' choices are the code's."""
import glob
import os

import pytest

from engine.config import _all_keys, load_config, read_yaml
from tests.support import ROOT
from wsss.schema import SCHEMA

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
BASES = sorted(glob.glob(os.path.join(ROOT, "configs", "_base_", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS)
def test_every_shipped_config_validates(path):
    load_config(path, SCHEMA)


def test_every_key_of_the_shipped_configs_and_bases_has_a_rule():
    keys = {key for path in CONFIGS + BASES for key in _all_keys(read_yaml(path))}
    assert keys - set(SCHEMA) == set()


def test_the_schema_choices_are_the_codes():
    from datasets import SOURCES
    from engine.precision import AMP_DTYPES
    from net.classifier import CODEBOOKS
    from net.deeplab import LAYOUTS
    from net.pooling import POOLS
    from net.resnet import BACKBONES
    from wsss.cam_files import CAM_DTYPES

    assert set(SCHEMA["dataset.name"].choices) == set(SOURCES)
    assert set(SCHEMA["model.backbone"].choices) == set(BACKBONES)
    assert set(SCHEMA["model.pool"].choices) == set(POOLS)
    assert set(SCHEMA["model.codebook"].choices) == set(CODEBOOKS)
    assert set(SCHEMA["train.amp"].choices) == set(AMP_DTYPES) | {False}
    assert SCHEMA["cam.amp"] is SCHEMA["train.amp"]
    assert set(SCHEMA["seg.model.layout"].choices) == set(LAYOUTS)
    assert set(SCHEMA["seg.model.backbone"].choices) == set(BACKBONES)
    assert set(SCHEMA["cam.dtype"].choices) == set(CAM_DTYPES)
