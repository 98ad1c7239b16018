"""No snapshot runs code when physgen.pretrained loads it: every crafted payload (a REDUCE
of os.system, eval, exec, subprocess; in a .pt zip; in the storage pickle a plain pickle
nests; inside a persistence record) is one UserError naming the file and the global it
asked for, and the marker file never appears; the source text a persistence record
carries (which EDM's own loader executes) is never executed."""
from __future__ import annotations

import pytest
import torch

import physgen.pretrained as P
from crafted_files import SNAPSHOT_PAYLOADS, snapshot_module_src
from physgen.errors import UserError
from physgen.pretrained.reader import ALLOWED


@pytest.mark.parametrize("name", list(SNAPSHOT_PAYLOADS))
@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_payload_is_refused_naming_its_global(tmp_path, name, suffix):
    make, global_name = SNAPSHOT_PAYLOADS[name]
    marker = tmp_path / "PAYLOAD-RAN"
    path = make(tmp_path / f"crafted{suffix}", marker)
    with pytest.raises(UserError) as info:
        P.load(path)
    text = str(info.value)
    assert not marker.exists(), f"{name}: the payload ran"
    assert f"{global_name!r}" in text and "crafted" in text and "\n" not in text, text


def test_the_module_source_of_a_record_is_never_executed(tmp_path):
    marker = tmp_path / "PAYLOAD-RAN"
    path = snapshot_module_src(tmp_path / "net.pkl", marker)
    model = P.load(path)
    assert not marker.exists()
    assert model.process.name == "edm" and model.info["preconditioner"] == "EDMPrecond"


def test_every_global_the_reader_resolves_is_a_type_or_its_own_function():
    """The allow-list hands pickle only classes (containers, numbers, the reader's record
    types), torch dtypes, and functions of the reader itself (which check their arguments
    before building a tensor, a number or a record): no library function is called directly."""
    for name, obj in ALLOWED.items():
        if isinstance(obj, (type, torch.dtype)):
            continue
        assert callable(obj) and obj.__module__ == "physgen.pretrained.reader", name


@pytest.mark.parametrize("kind", ["torch", "checkpoint"])
def test_physgen_checkpoint_payloads_are_refused_too(tmp_path, kind):
    """The crafted physgen checkpoints (a legacy torch.save, a checksummed file) through
    physgen.pretrained.load: refused, one line naming the file, the marker never made."""
    from crafted_files import CRAFTED

    marker = tmp_path / "PAYLOAD-RAN"
    path = CRAFTED[kind](tmp_path / "crafted.pt", marker)
    with pytest.raises(UserError) as info:
        P.load(path)
    assert not marker.exists() and "crafted" in str(info.value) and "\n" not in str(info.value)


def test_a_physgen_run_loads_as_its_own_field(tmp_path):
    """physgen.pretrained.load on a physgen run gives load_trained's process and field."""
    from physgen.cli.main import main
    from physgen.images.train import load_trained

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "8",
                     "--warmup-steps", "0", "--steps", "1", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32",
                     "--out", str(tmp_path / "run")]) == 0
    finally:
        torch.set_num_threads(n)
    m, ref = P.load(tmp_path / "run"), load_trained(tmp_path / "run")
    assert m.format == "physgen" and m.process.config() == ref.process.config() and m.shape == tuple(ref.shape)
    x, s = torch.randn(2, *m.shape), torch.tensor([0.5, 5.0])
    assert torch.equal(m.field(x, s), ref.field(x, s))
    assert torch.equal(m.denoise(x, s), ref.process.denoise(ref.field, x, s))
