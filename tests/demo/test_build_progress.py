"""The tiny model build's report, as the pages read it (no torch, no Django)."""

from __future__ import annotations

from training.demo import build_progress
from training.demo.build_progress import BuildProgress


def _progress(**changes) -> BuildProgress:
    fields = {"phase": "train", "step": 300, "total_steps": 1300, "started_at": 1000.0,
              "updated_at": 1100.0, "eta_seconds": 240.0}  # fmt: skip
    return BuildProgress(**{**fields, **changes})


def test_a_report_reads_back_until_it_goes_stale_or_is_cleared(tmp_path):
    out = tmp_path / "tiny-base"
    assert build_progress.progress_read(out, now=1100.0) is None  # no build
    build_progress.progress_write(out, _progress())
    assert build_progress.progress_read(out, now=1110.0) == _progress()
    stale = 1100.0 + build_progress.STALE_SECONDS + 1
    assert build_progress.progress_read(out, now=stale) is None  # the builder was killed
    build_progress.progress_clear(out)
    assert build_progress.progress_read(out, now=1110.0) is None
    assert list(tmp_path.iterdir()) == []


def test_a_torn_or_foreign_report_is_no_report(tmp_path):
    out = tmp_path / "tiny-base"
    build_progress.progress_path(out).write_text('{"phase": "tra')
    assert build_progress.progress_read(out, now=0.0) is None
    build_progress.progress_path(out).write_text('{"what": 1}')
    assert build_progress.progress_read(out, now=0.0) is None


def test_the_eta_follows_the_pace_of_the_steps_so_far():
    assert build_progress.eta_seconds(step=5, total_steps=100, train_seconds=5.0) is None
    assert build_progress.eta_seconds(step=25, total_steps=100, train_seconds=50.0) == 152.0
    assert build_progress.eta_seconds(step=100, total_steps=100, train_seconds=200.0) == 2.0
