"""A corrupt cached copy with download=True: the user is told, the bad copy is kept (renamed
aside, never deleted) and a verified copy is fetched; if the fetch fails the bad copy stays."""

from __future__ import annotations

import pytest
from test_data_download import FAST, GOOD, GOOD_SHA, server  # noqa: F401 (fixture)

from fimp_data.download import download_file
from fimp_data.errors import ChecksumError, DownloadError


def test_corrupt_cache_is_reported_kept_aside_and_refetched(server, tmp_path):  # noqa: F811
    target = tmp_path / "f.bin"
    target.write_bytes(b"half a download")
    with pytest.warns(UserWarning, match=r"cached .*f\.bin failed its checksum"):
        download_file(f"{server}/good", target, sha256=GOOD_SHA, **FAST)
    assert target.read_bytes() == GOOD
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("f.bin.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"half a download"
    # a second corrupt copy gets its own name; the first one is not overwritten
    target.write_bytes(b"half a download")
    with pytest.warns(UserWarning):
        download_file(f"{server}/good", target, sha256=GOOD_SHA, **FAST)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "f.bin" and len(names) == 3 and names[2].endswith("-2")


@pytest.mark.parametrize(
    ("path", "error"), [("/corrupt", ChecksumError), ("/missing", DownloadError)]
)
def test_failed_refetch_keeps_the_bad_copy_and_says_so(server, tmp_path, path, error):  # noqa: F811
    target = tmp_path / "f.bin"
    target.write_bytes(b"stale")
    with (
        pytest.warns(UserWarning),
        pytest.raises(error, match=r"failed its checksum.*left in place"),
    ):
        download_file(f"{server}{path}", target, sha256=GOOD_SHA, **FAST)
    assert target.read_bytes() == b"stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
