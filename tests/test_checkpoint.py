import errno
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mobilenets import checkpoint
from mobilenets.checkpoint import (
    atomic_write,
    flatten,
    load_checkpoint,
    read_saved_weights,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
    unflatten,
)


def nested_state() -> dict:
    return {
        "model": {"a.weight": torch.randn(3, 2), "a.num_batches_tracked": torch.tensor(4)},
        "optimizer": {
            "state": {0: {"square_avg": torch.ones(2)}, 1: {}},
            "param_groups": [{"lr": 0.1, "params": [0, 1]}],
        },
        "progress": {"epoch": 2, "best": {"val_top1": float("-inf")}, "history": [1.5, 2.5]},
        "info": {"model": "m"},
    }


def assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_flatten_round_trip_keeps_integer_keys() -> None:
    state = nested_state()
    tensors: dict[str, torch.Tensor] = {}
    rest = flatten(state, tensors)
    assert set(tensors) == {"model/a.weight", "model/a.num_batches_tracked", "optimizer/state/0/square_avg"}
    assert_same(unflatten(rest, tensors), state)


def test_checkpoint_round_trip_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.safetensors"
    state = nested_state()
    save_checkpoint(path, state)

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pickle must not be used to load a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert_same(load_checkpoint(path), state)
    weights, info = read_saved_weights(path)  # a checkpoint without EMA gives its model weights
    assert_same(weights, state["model"])
    assert info == {"model": "m"}


def test_weights_file_and_bare_state_dict(tmp_path: Path) -> None:
    weights = {"w": torch.arange(4.0)}
    save_weights(tmp_path / "best.safetensors", weights, {"classes": ["a", "b"]})
    state, info = read_saved_weights(tmp_path / "best.safetensors")
    assert torch.equal(state["w"], weights["w"]) and info == {"classes": ["a", "b"]}
    save_file(weights, tmp_path / "bare.safetensors")
    assert read_saved_weights(tmp_path / "bare.safetensors")[1] == {}
    with pytest.raises(ValueError, match="not a mobilenets training checkpoint"):
        load_checkpoint(tmp_path / "bare.safetensors")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        read_saved_weights(tmp_path / "missing.safetensors")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"progress": {"epoch": 1}, "w": torch.zeros(1000)})
    before = path.read_bytes()

    def fail_half_way(f, data: bytes) -> None:
        f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_chunks", fail_half_way)
    with pytest.raises(OSError, match="No space left") as info:
        save_checkpoint(path, {"progress": {"epoch": 2}, "w": torch.ones(1000)}, previous=tmp_path / "prev")
    # The message names the file the user knows, not the temporary file it was written to.
    assert info.value.errno == errno.ENOSPC and repr(str(path)) in str(info.value) and ".tmp" not in str(info.value)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["progress"]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary file left behind


def test_rng_state_round_trip() -> None:
    import random

    import numpy as np

    state = rng_state()
    tensors: dict[str, torch.Tensor] = {}
    restored = unflatten(flatten(state, tensors), tensors)
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(restored)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and (first[1] == second[1]).all() and first[2] == second[2]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "f.json", b"{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoint_keeps_the_one_it_replaces(tmp_path: Path) -> None:
    path, previous = tmp_path / "last.safetensors", tmp_path / "previous.safetensors"
    save_checkpoint(path, {"epoch": 1}, previous=previous)
    assert not previous.exists()
    save_checkpoint(path, {"epoch": 2}, previous=previous)
    save_checkpoint(path, {"epoch": 3}, previous=previous)
    assert load_checkpoint(path)["epoch"] == 3 and load_checkpoint(previous)["epoch"] == 2


@pytest.mark.parametrize("keep", [0, 100], ids=["empty", "truncated"])
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ValueError, match="cannot be read") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
