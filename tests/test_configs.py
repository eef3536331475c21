"""Every preset loads; malformed configs name the key."""
from pathlib import Path

import pytest

from configs.schema import ConfigError
from configs.loader import config_from_dict, load_config, replace, to_dict

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_presets():
    assert {p.name for p in PRESETS} >= {"tiny.yaml", "paper.yaml"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_round_trips(path):
    cfg = load_config(path)
    assert config_from_dict(to_dict(cfg)) == cfg


def test_embedded_default_is_tiny():
    cfg = load_config(None)
    assert cfg.models.preset == "tiny" and cfg.data.kind == "synthetic"


def test_paper_preset_matches_the_paper():
    cfg = load_config(PRESETS[[p.name for p in PRESETS].index("paper.yaml")])
    assert (cfg.transmitter.audio.tokens, cfg.transmitter.video.tokens) == (64, 32)
    assert cfg.channel.snr_db == 10 and cfg.train.stage2.batch == 8 and cfg.train.stage2.lr == 1e-4
    assert (cfg.models.lora.r, cfg.models.lora.alpha, cfg.models.lora.dropout) == (4, 16, 0.1)
    assert cfg.models.lm_path == "Qwen/Qwen2.5-1.5B"


def test_dotted_overrides_and_per_link_parameters():
    cfg = load_config(None, ["channel.snr_db=6", "channel.fading=rayleigh",
                             "channel.links={user0/audio: {snr_db: 0, fading: rician}}"])
    assert cfg.channel.link("user0/video").snr_db == 6
    audio = cfg.channel.link("user0/audio")
    assert (audio.snr_db, audio.fading) == (0, "rician")
    assert replace(cfg, ["seed=3"]).seed == 3


@pytest.mark.parametrize("override, key", [
    ("train.stage1.stepz=3", "train.stage1.stepz"),
    ("channel.fading=nakagami", "channel.fading"),
    ("users=0", "users"),
    ("transmitter.audio.tokens=abc", "transmitter.audio.tokens"),
    ("channel.links={user0/audio: {snr: 3}}", "channel.links.user0/audio.snr"),
    ("models.lora.dropout=1.5", "models.lora.dropout"),
    ("data.synthetic.question_set=binding", "data.synthetic.question_set"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("/", "/")):
        load_config(None, [override])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_link_lookups_are_memoised_outside_the_fields_the_digest_reads():
    from configs.loader import config_digest

    c = load_config(None, ["channel.links={user0/audio: {snr_db: 3.0}}", "network.links={user0/video: {delay_ms: 2}}"])
    before = config_digest(c)
    assert c.channel.link("user0/audio") is c.channel.link("user0/audio")
    assert c.channel.link("user0/audio").snr_db == 3.0 and c.channel.link("user0/text").snr_db == c.channel.snr_db
    assert c.network.link("user0/video").delay_ms == 2 and c.network.link("user0/audio").delay_ms == 0
    assert config_digest(c) == before and c == load_config(None, ["channel.links={user0/audio: {snr_db: 3.0}}",
                                                                  "network.links={user0/video: {delay_ms: 2}}"])
