"""A quiet run: GNU Radio's INFO lines stay out of the terminal unless asked for."""

from __future__ import annotations

import pytest

from pairzero.log import GR_LOG_LEVEL_ENV, quiet_gnuradio

gr = pytest.importorskip("gnuradio.gr")


def _flowgraph_output(capfd: pytest.CaptureFixture[str]) -> str:
    """What a flowgraph that sets a block's minimum output buffer prints (GNU Radio logs that
    at INFO, once per block)."""
    from gnuradio import blocks

    capfd.readouterr()
    tb = gr.top_block()
    head = blocks.head(gr.sizeof_gr_complex, 10)
    head.set_min_output_buffer(8192)
    tb.connect(blocks.null_source(gr.sizeof_gr_complex), head, blocks.null_sink(gr.sizeof_gr_complex))
    tb.run()
    return capfd.readouterr().out


@pytest.fixture()
def restore_gr_level():
    before = gr.logging().default_level()
    yield
    gr.logging().set_default_level(before)


@pytest.mark.parametrize(("level", "user", "shown"), [
    ("INFO", None, False),      # the default: quiet
    ("WARNING", None, False),
    ("DEBUG", None, True),      # --log-level DEBUG brings it back
    ("INFO", "info", True),     # so does the user's own GR_CONF_LOG_LOG_LEVEL
])
def test_gnu_radio_info_lines_only_when_asked(level, user, shown, capfd, monkeypatch,
                                              restore_gr_level) -> None:
    monkeypatch.delenv(GR_LOG_LEVEL_ENV, raising=False)
    if user is not None:
        monkeypatch.setenv(GR_LOG_LEVEL_ENV, user)
    quiet_gnuradio(level)
    out = _flowgraph_output(capfd)
    assert ("set_min_output_buffer" in out) is shown, out
