import json

import numpy as np
from datafactory import (
    CLASSES,
    image_tree_files,
    write_zip,
)

from memgate.cli import main


def test_cli_data_info_json(tmp_path, arrays, capsys):
    path = write_zip(tmp_path / "d.zip", image_tree_files(*arrays))
    assert main(["data", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 30 and info["test"] == 20
    assert info["per_class_train"] == [3] * 10
    assert info["classes"] == CLASSES
    assert np.allclose(info["mean"], arrays[0].reshape(-1, 3).mean(0) / 255)
    assert np.allclose(info["std"], arrays[0].reshape(-1, 3).std(0) / 255)
