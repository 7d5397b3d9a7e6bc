"""Checkpoints: .npz round trips and torchvision .pth files read without torch."""

import io
import json
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from mrcnn_np.io import (
    CheckpointError,
    load_npz,
    load_torchvision_checkpoint,
    save_npz,
    upgrade_torchvision_keys,
)


def test_npz_round_trip_keeps_order_dtype_and_values(tmp_path):
    state = OrderedDict([("b.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
                         ("a.count", np.array(3, np.int64))])
    save_npz(tmp_path / "w.npz", state)
    loaded = load_npz(tmp_path / "w.npz")
    assert list(loaded) == ["b.weight", "a.count"]
    np.testing.assert_array_equal(loaded["b.weight"], state["b.weight"])
    assert loaded["b.weight"].dtype == np.float32 and loaded["a.count"].dtype == np.int64


def test_old_torchvision_names_are_upgraded_and_new_ones_kept():
    old = ["backbone.fpn.inner_blocks.2.weight", "backbone.fpn.layer_blocks.0.bias",
           "rpn.head.conv.weight", "rpn.head.cls_logits.weight",
           "roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head.mask_fcn4.bias",
           "roi_heads.mask_predictor.conv5_mask.weight", "backbone.body.layer1.0.conv1.weight"]
    new = ["backbone.fpn.inner_blocks.2.0.weight", "backbone.fpn.layer_blocks.0.0.bias",
           "rpn.head.conv.0.0.weight", "rpn.head.cls_logits.weight",
           "roi_heads.mask_head.0.0.weight", "roi_heads.mask_head.3.0.bias",
           "roi_heads.mask_predictor.conv5_mask.weight", "backbone.body.layer1.0.conv1.weight"]
    state = OrderedDict((k, np.zeros(1)) for k in old)
    assert list(upgrade_torchvision_keys(state)) == new
    # today's names are already current: nothing changes
    assert list(upgrade_torchvision_keys(OrderedDict((k, 0) for k in new))) == new


def test_both_generations_of_one_name_is_an_error():
    state = OrderedDict([("rpn.head.conv.weight", 0), ("rpn.head.conv.0.0.weight", 0)])
    with pytest.raises(CheckpointError, match="both"):
        upgrade_torchvision_keys(state)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="print"):
        load_torchvision_checkpoint(path)


def test_files_that_are_not_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_torchvision_checkpoint(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError):
        load_torchvision_checkpoint(junk)
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError):
        load_torchvision_checkpoint(plain)


LOADER = """
import json, sys
import numpy as np
from mrcnn_np.io import load_torchvision_checkpoint
state = load_torchvision_checkpoint(sys.argv[1], upgrade_keys=False,
                                    drop_num_batches_tracked=False)
assert "torch" not in sys.modules, "the loader imported torch"
np.savez(sys.argv[2], **state)
print(json.dumps(list(state)))
"""


def _load_without_torch(path, tmp_path):
    out = tmp_path / "loaded.npz"
    run = subprocess.run([sys.executable, "-c", LOADER, str(path), str(out)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    keys = json.loads(run.stdout)
    with np.load(out) as data:
        return keys, {k: data[k] for k in data.files}


@pytest.mark.parity
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_files_load_identically_without_torch(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    bn(torch.randn(2, 4, 5, 5))  # moves running stats and num_batches_tracked
    base = torch.randn(5, 6)
    state = OrderedDict()
    state.update({f"conv.{k}": v for k, v in conv.state_dict().items()})
    state.update({f"bn.{k}": v for k, v in bn.state_dict().items()})
    state["transposed"] = base.t()  # non-contiguous: a strided view of a shared storage
    state["slice"] = base[1:3, 2:]  # an offset into the same storage
    state["half"] = torch.randn(3).half()
    state["mask"] = torch.tensor([True, False, True])
    path = tmp_path / "model.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)

    keys, loaded = _load_without_torch(path, tmp_path)
    assert keys == list(state)
    for key, tensor in state.items():
        expected = tensor.numpy()
        assert loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)


@pytest.mark.parity
def test_torchvision_maskrcnn_state_dict_round_trips(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3)
    path = tmp_path / "maskrcnn.pth"
    torch.save(model.state_dict(), path)
    loaded = load_torchvision_checkpoint(path)
    expected = {k: v.numpy() for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_truncated_legacy_file_is_reported(tmp_path):
    # a legacy stream: magic, protocol, sys info, the pickle, keys, then storage bytes
    stream = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, stream, protocol=2)
    path = tmp_path / "short.pth"
    path.write_bytes(stream.getvalue())
    with pytest.raises(CheckpointError):
        load_torchvision_checkpoint(path)
