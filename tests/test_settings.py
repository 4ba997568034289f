"""Settings: defaults, per-key fallback, validation."""

import pytest
from invoke import Config

from tensorboard_remote.settings import DEFAULTS, TbError, port, resolve, settings


def test_defaults_match_the_seed_script():
    assert DEFAULTS["logdir"] == "./logdir"
    assert DEFAULTS["remote_port"] == 6008
    assert DEFAULTS["local_port"] == 6006


def test_a_composers_partial_tb_section_keeps_our_other_defaults():
    # invoke merges collection config shallowly: this is all tb.start sees.
    config = Config(overrides={"tb": {"local_port": 16016}})
    resolved = settings(config)
    assert resolved.local_port == 16016
    assert resolved.remote_port == 6008
    assert resolved.logdir == "./logdir"
    assert resolved.control_dir == DEFAULTS["control_dir"]


def test_a_flag_beats_config_and_config_beats_defaults():
    config = Config(overrides={"tb": {"logdir": "from-config"}})
    assert resolve(config, "logdir", "from-flag") == "from-flag"
    assert resolve(config, "logdir") == "from-config"
    assert resolve(Config(), "logdir") == "./logdir"


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "6006.5", "", True])
def test_ports_must_be_integers_from_1_to_65535(value):
    with pytest.raises(TbError, match="must be an integer from 1 to 65535"):
        port(value, "local_port")


def test_port_strings_from_env_or_flags_are_accepted():
    assert port("7007", "local_port") == 7007
    assert port(7007, "local_port") == 7007


def test_bad_timeouts_are_refused():
    with pytest.raises(TbError, match="start_timeout"):
        settings(Config(), start_timeout="soon")


def test_a_bad_number_in_the_environment_is_our_one_line_error_not_a_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "INVOKE_TB_LOCAL_PORT": "abc"}
    binary = Path(sys.executable).parent / "tensorboard-remote"
    result = subprocess.run([str(binary), "hostA", "check"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == "tensorboard-remote: local_port must be an integer from 1 to 65535, got 'abc'\n"


def test_the_readme_settings_table_matches_the_collection_defaults():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    # Only the Settings section: other tables (the session record's) have rows of the same shape.
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M))
    assert set(rows) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        shown = rows[key].strip()
        if default in (None, ""):
            assert shown in ("none", "empty"), key
        else:
            assert shown == f"`{default}`", key


def test_an_activation_holding_a_reserved_word_is_refused_before_anything_starts():
    with pytest.raises(TbError, match="activate contains a word reserved"):
        settings(Config(overrides={"tb": {"activate": "echo\nTBR_SH_EOF\nrm -rf ~"}}))
