from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the ``mobilenets`` command in-process: ``cli(*argv)`` -> (exit status, stdout, stderr)."""
    from mobilenets.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def one_thread() -> Iterator[None]:
    """PyTorch on one thread: tiny models on a shared machine run faster without threads waiting on each other."""
    from mobilenets.bench import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``MOBILENETS_CACHE`` set to a fresh folder: measurements neither read nor fill the user's cache."""
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
