"""A full disk or a read-only results folder: a clear error, and earlier results intact.

Both faults are real: a tiny tmpfs filled to the brim, and a read-only bind
mount. Mounting needs root with CAP_SYS_ADMIN; without it the tests are skipped
with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip()}); the disk fault tests need root")


@pytest.fixture
def mountpoint():
    folder = Path(tempfile.mkdtemp(prefix="dropout-lab-disk-"))
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)
    subprocess.run(["rm", "-rf", str(folder)])


def train(out: Path, data_dir: Path, mirror: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dropout_lab.train", f"out={out}", f"data_dir={data_dir}",
         f"dataset.mirror={mirror or 'null'}", "model.width=32", "train.epochs=1", "dataset.train_fraction=0.02",
         "dataset.test_fraction=0.05", "eval.mc_samples=0", "progress=false"],
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_full_disk(mountpoint, mnist_data_dir, mnist_mirror):
    _mount("-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mountpoint))
    earlier = mountpoint / "earlier" / "metrics.json"
    earlier.parent.mkdir()
    earlier.write_text('{"kept": true}\n')
    fd = os.open(mountpoint / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the brim
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    proc = train(mountpoint / "run", mnist_data_dir, mnist_mirror)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write ") and "No space left on device" in last
    assert str(mountpoint / "run" / "metrics.json") in last
    assert json.loads(earlier.read_text()) == {"kept": True}
    assert not (mountpoint / "run" / "metrics.json").exists()
    assert not list((mountpoint / "run").glob(".*.part"))


@pytest.mark.slow
def test_read_only_results(mountpoint, mnist_data_dir, mnist_mirror):
    earlier = mountpoint / "earlier" / "metrics.json"
    earlier.parent.mkdir()
    earlier.write_text('{"kept": true}\n')
    (mountpoint / "run").mkdir()
    _mount("--bind", str(mountpoint), str(mountpoint))
    _mount("-o", "remount,ro,bind", str(mountpoint))
    proc = train(mountpoint / "run", mnist_data_dir, mnist_mirror)
    # Found before any training, with one line naming the folder.
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: out={mountpoint / 'run'} cannot be written (Read-only file system); pass a writable folder "
        "or fix its permissions"]
    assert "epoch" not in proc.stdout
    assert json.loads(earlier.read_text()) == {"kept": True}


@pytest.mark.slow
def test_aggregate_on_a_full_disk_is_one_line_and_keeps_the_earlier_table(mountpoint):
    import pandas as pd

    from dropout_lab.analysis.aggregate import WriteError, write_tables

    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint))
    table = mountpoint / "runs.parquet"
    pd.DataFrame({"a": [1.0]}).to_parquet(table)
    earlier = table.read_bytes()
    big = pd.DataFrame({"a": range(200_000)})
    with pytest.raises(WriteError) as info:
        write_tables({str(table): big}, {}, str(mountpoint / "provenance.json"))
    message = str(info.value)
    assert message.startswith(f"could not write {table}: ") and "\n" not in message
    assert table.read_bytes() == earlier
    assert not list(mountpoint.glob(".*.part"))
