"""IndexTable (an .idx as two int64 arrays) gives what read_index's dict gives, errors too."""

import numpy as np
import pytest

from auggen.data.recordio import IndexTable, read_index


def _same(path):
    table, index = IndexTable.read(path), read_index(path)
    assert len(table) == len(index)
    assert table.keys.tolist() == sorted(index)
    assert all(table[k] == index[k] for k in index)
    return table


def test_index_table_matches_the_dict(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.permutation(5000)  # any order in the file
    offsets = rng.integers(0, 2**40, 5000)
    path = tmp_path / "a.idx"
    path.write_text("".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)))
    table = _same(path)
    pos, found = table.find([keys[7], 10**9, keys[3]])
    assert found.tolist() == [True, False, True]
    assert table.offsets[pos[0]] == offsets[7] and 10**9 not in table and keys[3] in table
    with pytest.raises(KeyError):
        table[10**9]
    # Spaces instead of tabs, no final newline, blank lines, a repeated key (the last wins).
    for text in ("0 0\n1 40\n2 80", "0\t0\n\n1\t40\n", "0\t0\n1\t40\n1\t99\n", ""):
        path.write_text(text)
        _same(path)


def test_index_table_names_the_bad_line(tmp_path):
    path = tmp_path / "b.idx"
    path.write_text("0\t0\n1\tforty\n")
    with pytest.raises(ValueError, match=r"b.idx:2: expected 'key<TAB>offset'"):
        IndexTable.read(path)
    path.write_text("0\t0\t7\n1\t40\n")  # three numbers on a line
    with pytest.raises(ValueError, match=r"b.idx:1: expected"):
        IndexTable.read(path)
