"""The native-kernel build says so when it compiles (a slow load), and stays quiet when it loads
a cached build (a fast one)."""

import logging
import time

from mesimp_lib import fused


def test_a_slow_build_logs_a_notice_and_shows_progress(monkeypatch, caplog, capsys):
    monkeypatch.setattr(fused, "NOTICE_AFTER_S", 0.05)

    def slow_load(**kwargs):
        time.sleep(1.3)
        return kwargs["name"]

    with caplog.at_level(logging.WARNING, logger="mesimp_lib.fused"):
        assert fused._load_with_notice(slow_load, name="x") == "x"
    assert any("compiling meProp's native C++ kernels" in r.getMessage() for r in caplog.records)
    assert "compiling native kernels" in capsys.readouterr().err  # the tqdm line (a widget in a notebook)


def test_a_fast_load_is_silent(monkeypatch, caplog, capsys):
    monkeypatch.setattr(fused, "NOTICE_AFTER_S", 5.0)
    with caplog.at_level(logging.WARNING, logger="mesimp_lib.fused"):
        assert fused._load_with_notice(lambda **kw: 7) == 7
    assert not caplog.records and "compiling" not in capsys.readouterr().err
