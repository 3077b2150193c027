"""`python -m harness.prepare_data`: builds datasets up front and prints the hashes runs will record."""

from __future__ import annotations

import re

from support import TOY_WORKLOAD
from harness import prepare_data
from harness.discovery import load_workload

MISSING = '''from harness.errors import DataMissingError
from toy_workload.torch import Workload as Toy


class Workload(Toy):
    def read_splits(self):
        raise DataMissingError("toy data not found; install the Debian package toy-data")
'''


def test_prints_the_hash_each_run_records(tmp_path, capsys):
    assert prepare_data.main(["--workload", str(TOY_WORKLOAD), "--data_dir", str(tmp_path)]) == 0
    expected = load_workload(str(TOY_WORKLOAD), "pytorch", tmp_path)
    expected.load_splits()
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"{re.escape(str(TOY_WORKLOAD))}: data hash {expected.data_hash()} \(\d+\.\d s\)", line)


def test_a_missing_source_is_one_error_line_saying_what_to_install(tmp_path, capsys):
    folder = tmp_path / "missing"
    folder.mkdir()
    (folder / "torch.py").write_text(MISSING)
    assert prepare_data.main(["--workload", str(folder), "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: toy data not found; install the Debian package toy-data\n"


def test_an_unknown_workload_is_an_error(tmp_path, capsys):
    assert prepare_data.main(["--workload", "no_such_workload", "--data_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown workload 'no_such_workload'")
