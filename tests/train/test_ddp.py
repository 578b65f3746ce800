import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mobilenets.cli import main
from mobilenets.data.synthetic import make_image_folder


def test_two_cpu_processes_match_one_on_the_same_global_batch(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", num_classes=4, per_class=8, val_per_class=2)
    # Frozen BatchNorm and no augmentation or dropout: every image's gradient is then the same
    # whichever process computes it, so the two runs differ only by floating-point summation order.
    options = {
        "model": "mobilenet_v1_0.25_128",
        "data": str(data),
        "resolution": "32",
        "epochs": "2",
        "batch-size": "16",
        "warmup-epochs": "0",
        "dropout": "0",
        "workers": "0",
        "threads": "1",
        "seed": "3",
    }
    flags = ["--no-augment", "--freeze-bn"]
    argv = ["train", *(f"--{k}={v}" for k, v in options.items()), *flags]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "mobilenets", *argv, f"--out={tmp_path / 'ddp'}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2:") == 1  # only rank 0 prints

    assert main([*argv, f"--out={tmp_path / 'single'}"]) == 0

    runs = {name: load_file(tmp_path / name / "last.safetensors") for name in ("ddp", "single")}
    weights = [k for k in runs["single"] if k.startswith("model/") and runs["single"][k].is_floating_point()]
    assert len(weights) > 20
    for key in weights:
        torch.testing.assert_close(runs["ddp"][key], runs["single"][key], rtol=1e-4, atol=1e-5, msg=key)
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # written once, by rank 0
    single_lines = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    for ddp_record, single_record in zip(map(json.loads, lines), map(json.loads, single_lines), strict=True):
        assert abs(ddp_record["train_loss"] - single_record["train_loss"]) < 1e-4
    assert json.loads(lines[1])["train_loss"] < json.loads(lines[0])["train_loss"]
