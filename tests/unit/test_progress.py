"""What tb.start shows while it works: the spinner, and a login that may prompt."""

import io

from tensorboard_remote.progress import Reporter


class Terminal(io.StringIO):
    """Output that says it is a terminal, so the Reporter draws a spinner."""

    def isatty(self) -> bool:
        return True


def test_a_phase_on_a_terminal_draws_a_spinner():
    report = Reporter(stream=Terminal())
    report.phase("h: waiting for the page")
    try:
        assert report.spinning
    finally:
        report.close()


def test_a_login_that_may_prompt_stops_the_spinner_and_says_so_on_a_line_of_its_own():
    screen = Terminal()
    report = Reporter(stream=screen)
    report.phase("h: choosing a port")
    with report.login("h: connecting", prompts=True):
        assert not report.spinning
        report.phase("h: a phase begun while ssh may prompt")
        assert not report.spinning  # no redraw over the prompt, whoever asks
        shown = screen.getvalue()
    assert shown.endswith("h: connecting (ssh may ask for a password or a code)\n")
    report.phase("h: starting TensorBoard")
    try:
        assert report.spinning  # the progress resumes after the login
    finally:
        report.close()


def test_a_login_that_cannot_prompt_keeps_the_spinner():
    screen = Terminal()
    report = Reporter(stream=screen)
    with report.login("h: connecting", prompts=False):
        assert report.spinning
    report.close()
    assert "ssh may ask" not in screen.getvalue()


def test_plain_and_quiet_output_say_nothing_more_for_a_login():
    for report, stream in [
        (Reporter(stream=(piped := io.StringIO())), piped),
        (Reporter(stream=(quiet := Terminal()), quiet=True), quiet),
        (Reporter(stream=(several := Terminal()), plain=True), several),
    ]:
        with report.login("h: connecting", prompts=True):
            assert not report.spinning
        report.close()
        assert stream.getvalue() == ""
