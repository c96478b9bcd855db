"""The checkpoint file (DNSD/runs/checkpoint_file.py): what goes in comes out, bit for bit, nothing else loads."""
import zipfile

import numpy as np
import pytest

from DNSD.errors import InputError
from DNSD.runs.checkpoint_file import FORMAT, read_checkpoint, save_checkpoint


def test_plain_data_and_arrays_round_trip_exactly(tmp_path):
    path = str(tmp_path / "a.pdckpt")
    state = {"numbers": [1, 2.5, float("inf")], "nested": {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
             "flag": True, "none": None}, "std": np.float64(1 / 3), "text": "é"}
    save_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert loaded["numbers"] == [1, 2.5, float("inf")] and loaded["std"] == 1 / 3 and loaded["text"] == "é"
    assert loaded["nested"]["w"].dtype == np.float32 and np.array_equal(loaded["nested"]["w"], state["nested"]["w"])
    assert loaded["nested"]["flag"] is True and loaded["nested"]["none"] is None


def test_an_object_array_is_neither_written_nor_read(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(str(tmp_path / "b.pdckpt"), {"objects": np.array([object()])})
    path = tmp_path / "c.pdckpt"
    save_checkpoint(str(path), {"w": np.zeros(2)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("extra.py", "print('hello')")
    with pytest.raises(InputError, match="its members are not those of"):
        read_checkpoint(str(path))


def test_a_file_that_is_neither_zip_nor_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "d.pdckpt"
    path.write_text("hello")
    with pytest.raises(InputError, match="is not a DNSD checkpoint"):
        read_checkpoint(str(path))
