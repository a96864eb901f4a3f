"""The models this project ships (models/): their checksums hold, a damaged copy fails to
load with the file's name, and the demo generator loads through the production path and
writes inventions the parser reads."""

import shutil

import pytest

from allthepatents.weights import (
    SUMS_FILE,
    WeightsDamaged,
    weights_checksums_write,
    weights_verify,
)
from tests.helpers import ROOT

DEMO = ROOT / "models" / "demo-generator"


@pytest.mark.unit
def test_checksums_catch_a_changed_byte_and_a_missing_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "config.json").write_text("{}")
    weights_checksums_write(tmp_path)
    assert weights_verify(tmp_path) is True
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[1000] ^= 0x01
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(WeightsDamaged, match=r"weights\.bin is damaged"):
        weights_verify(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(WeightsDamaged, match=r"weights\.bin is missing"):
        weights_verify(tmp_path)


@pytest.mark.unit
def test_a_folder_without_checksums_is_not_checked(tmp_path):
    assert weights_verify(tmp_path) is False


@pytest.mark.unit
def test_the_shipped_demo_generator_matches_its_checksums_and_card():
    assert weights_verify(DEMO) is True
    card = (DEMO / "MODEL_CARD.md").read_text()
    for line in (DEMO / SUMS_FILE).read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.endswith(".safetensors"):
            assert digest in card, f"the model card does not give {name}'s checksum"


def test_a_damaged_shipped_model_fails_to_load_with_a_clear_message(tmp_path):
    from generation.backends import ModelLoadError, TransformersBackend

    copy = shutil.copytree(DEMO, tmp_path / "demo")
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is damaged.*restore it"):
        TransformersBackend(str(copy))


def test_the_shipped_demo_generator_writes_inventions_the_parser_reads():
    from generation.backends import TransformersBackend
    from generation.parsing import patent_text_parse
    from generation.prompts import prompt_render
    from generation.sampling import SamplingParams

    backend = TransformersBackend(str(DEMO))
    params = SamplingParams(max_new_tokens=200)
    prompt = prompt_render(prompt_format="kl3m", mode="top-down")
    outs = backend.generate([prompt] * 4, [1, 2, 3, 4], params)
    parsed = [patent_text_parse(prompt + out.text, finished=out.finished) for out in outs]
    # A model trained for 400 steps writes the form: a title and an abstract at least.
    assert sum(bool(p.title and p.abstract) for p in parsed) >= 2, [o.text[:300] for o in outs]


def test_shipping_halves_the_weights_and_leaves_checkpoints_out(tmp_path, tiny_neox):
    from safetensors.torch import load_file

    from allthepatents.weights import weights_ship

    source = shutil.copytree(tiny_neox, tmp_path / "trained")
    (source / "checkpoint").mkdir(exist_ok=True)
    (source / "checkpoint" / "state.pt").write_bytes(b"x" * 100)
    target = tmp_path / "shipped"
    weights_ship(source=source, target=target)
    assert not (target / "checkpoint").exists()
    assert weights_verify(target) is True
    before = load_file(str(next(source.glob("*.safetensors"))))
    after = load_file(str(next(target.glob("*.safetensors"))))
    assert before.keys() == after.keys()
    for name, tensor in after.items():
        assert str(tensor.dtype) == "torch.float16"
        assert (tensor.float() - before[name]).abs().max() < 1e-2
