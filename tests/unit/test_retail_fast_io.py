"""The retail pack's fast paths (fast_io.py) give exactly what the plain calls they replace give.

The pack's output must stay byte-identical for a seed, so each shortcut is checked against the call
it stands for: ``Choice`` against ``Generator.choice(p=...)`` (same draws, same generator state after),
``write_table`` against ``pq.write_table`` (same bytes), and ``Writer`` must not lose a failed write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from task_components.datasets.retail.fast_io import Choice, Writer, read_columns, strings, write_table


@pytest.mark.parametrize("seed", range(12))
def test_choice_draws_what_numpy_choice_draws(seed: int) -> None:
    shape = np.random.default_rng(seed)
    n = int(shape.integers(2, 3000))
    p = 1.0 / np.arange(1, n + 1) ** shape.uniform(0.3, 1.5)
    if seed % 3 == 0:
        p[shape.integers(0, n, n // 3)] = 0.0  # zero-probability items (cdf steps of zero width)
    p = shape.permutation(p / p.sum())
    fast, plain = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 1])
    choice = Choice(p)
    for size in (0, 1, 1000, 60_000):
        assert np.array_equal(choice.draw(fast, size), plain.choice(n, size, p=p))
    assert fast.random() == plain.random()  # the generators are in the same state afterwards


def test_choice_refuses_what_numpy_refuses() -> None:
    with pytest.raises(ValueError):
        Choice(np.array([0.5, 0.6]))


def test_write_table_writes_the_bytes_of_pq_write_table(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": np.arange(5000, dtype=np.int64),
            "ts": pa.array(np.arange(5000, dtype=np.int64) * 1000, pa.timestamp("ms")),
            "kind": strings(pa.array(["a", "bb", "ccc"]), np.arange(5000) % 3),
        }
    )
    pq.write_table(table, tmp_path / "plain.parquet", compression="zstd")
    assert write_table(table, tmp_path / "d" / "fast.parquet") == 5000
    assert (tmp_path / "d" / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert read_columns(tmp_path / "d" / "fast.parquet", ["kind", "id"]).equals(table.select(["kind", "id"]))


def test_writer_waits_for_its_files_and_raises_a_failed_write(tmp_path: Path) -> None:
    table = pa.table({"x": np.arange(10)})
    with Writer() as out:
        for i in range(5):
            out.put(table, tmp_path / f"dt={i}" / "part-0.parquet")
    assert all((tmp_path / f"dt={i}" / "part-0.parquet").exists() for i in range(5))
    (tmp_path / "blocker").write_text("a file where a directory must go")
    with pytest.raises(OSError), Writer() as out:
        out.put(table, tmp_path / "blocker" / "dt=0" / "part-0.parquet")
