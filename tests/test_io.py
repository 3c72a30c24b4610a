import os
import stat

from i2iuda.io import atomic_write_bytes


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new contents")
    assert p.read_bytes() == b"new contents"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600
