"""`make docs`: the two PNGs for the docs render (plotly + kaleido in Debian's chromium)."""

from __future__ import annotations

import struct


def test_export_docs_writes_two_pngs(chromium_path, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", chromium_path)
    from mesimp_lib.viz.export import SIZES, export_docs

    written = export_docs(tmp_path, scale=1)
    assert sorted(p.name for p in written) == ["active_paths.png", "layer_shrinkage.png"]
    for p in written:
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", p
        width, height = struct.unpack(">II", head[16:24])
        assert (width, height) == SIZES[p.stem], (p, width, height)
        assert p.stat().st_size > 20_000, f"{p} is suspiciously small (an empty plot?)"
