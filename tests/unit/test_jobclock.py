"""A Slurm job's clock, from squeue's %L to tb.check's words."""

from __future__ import annotations

import pytest

from tensorboard_remote import slurm
from tensorboard_remote.jobclock import Clock, clock_text, seconds


@pytest.mark.parametrize(
    "left, expected",
    [("45", 45), ("3:07", 187), ("3:59:12", 14352), ("1-02:03:04", 93784), ("2-00:00:00", 172800),
     ("UNLIMITED", None), ("NOT_SET", None), ("INVALID", None), ("-", None), ("", None)],
)
def test_squeues_time_left_in_seconds(left, expected):
    assert seconds(left) == expected


def test_the_clock_counts_down_from_the_lookup():
    clock = Clock("0:10:00", seen=1000.0)
    assert clock.remaining(now=1000.0) == 600
    assert clock.remaining(now=1240.0) == 360
    assert clock.remaining(now=99999.0) == 0
    assert clock.words(now=1240.0) == "0:06:00 left"
    assert clock_text(93784) == "1-02:03:04"


def test_no_limit_and_no_answer_say_so():
    assert Clock("UNLIMITED", 0).words() == "no time limit (UNLIMITED)"
    assert Clock("UNLIMITED", 0).warning(600, "7") is None
    assert Clock("-", 0).words() == "time left unknown"
    assert Clock("-", 0).as_json() == {"left": "time left unknown", "left_seconds": None, "unlimited": False}


def test_a_warning_only_under_the_threshold():
    clock = Clock("0:09:59", seen=0.0)
    warned = clock.warning(600, "12", now=0.0)
    assert warned is not None and warned.startswith("warning: job 12 reaches its time limit in 0:09:59 (at ")
    assert clock.warning(300, "12", now=0.0) is None
    assert Clock("0:10:00", seen=0.0).warning(600, "12", now=0.0) is None


def test_the_job_lookup_reads_the_time_left_and_older_lines_without_it():
    out = "tbr-info user alice\ntbr-job 12 RUNNING alice cn1 10.0.0.3 3:59:12\ntbr-job 13 PENDING alice - - 4:00:00\ntbr-job 14 RUNNING alice cn2 - \ntbr jobs\n"
    jobs = slurm.parse_jobs(out)
    assert [(j.id, j.left) for j in jobs] == [("12", "3:59:12"), ("13", "4:00:00"), ("14", "-")]
