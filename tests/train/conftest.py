"""The training tests' shared fixture: a small synthetic image folder (see ``tiny_run`` for the run)."""

from pathlib import Path

import pytest

from mobilenets.data.synthetic import make_image_folder


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes, 16 training and 4 validation images each, 32×32 RGB."""
    return make_image_folder(tmp_path_factory.mktemp("synthetic"), num_classes=4, per_class=16, val_per_class=4)
