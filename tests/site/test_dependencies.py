"""Version bounds that the code depends on, checked against what it actually uses."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _lower_bound(package: str) -> Version:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(rf"{package}\b", d, re.I)]
    return Version(re.search(r">=\s*([\w.]+)", spec).group(1))


def test_transformers_lower_bound_is_the_first_with_the_cache_layer_interface():
    """The preallocated KV cache subclasses DynamicLayer's lazy-initialisation interface
    (transformers 4.56); an older lower bound would install a transformers it breaks on."""
    import transformers
    from transformers.cache_utils import DynamicLayer

    from generation.sampling import TRANSFORMERS_MIN, preallocated_layer_class

    assert _lower_bound("transformers") == Version(TRANSFORMERS_MIN)
    assert Version(transformers.__version__) >= Version(TRANSFORMERS_MIN)
    layer_class = preallocated_layer_class()
    for name in ("lazy_initialization", "update", "get_seq_length", "batch_select_indices"):
        assert hasattr(DynamicLayer, name), f"DynamicLayer lost {name}: the cache overrides it"
        assert getattr(layer_class, name) is not getattr(DynamicLayer, name)
    layer = layer_class(capacity=4)
    assert layer.is_initialized is False  # set by DynamicLayer.__init__, read by update()


def test_sampling_defaults_have_one_source():
    """#17.6: the job model, job_create's fallbacks and the backends' SamplingParams agree
    because they read one object; change it and all three follow."""
    from generation.models import GenerationJob
    from generation.sampling import JOB_SAMPLING_FIELDS, SAMPLING_DEFAULTS, SamplingParams

    job_defaults = {f: GenerationJob._meta.get_field(f).default for f in JOB_SAMPLING_FIELDS}
    assert job_defaults == {f: getattr(SamplingParams(), f) for f in JOB_SAMPLING_FIELDS}
    assert SAMPLING_DEFAULTS == SamplingParams()
