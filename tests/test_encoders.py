"""Frozen encoders (shapes, determinism, loading) and the selected-feature cache."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from configs.schema import ModelsConfig
from device_node.encoders import build_encoder, sample_frames
from device_node.features import selected_features
from device_node.selection import select_tokens

TINY = ModelsConfig(preset="tiny")
CLIP_SAMPLES = 20480  # 1.28 s at 16 kHz


class FakeAV:
    """The AVDataset duck type over random clips, counting loads."""

    def __init__(self, num: int, seed: int = 0, frames: int = 16, size: int = 32):
        rng = np.random.default_rng(seed)
        self.ids = [f"clip{i:03d}" for i in range(num)]
        self.audio = {c: (0.1 * rng.standard_normal(CLIP_SAMPLES)).astype(np.float32) for c in self.ids}
        self.frames = {c: rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for c in self.ids}
        self.seed, self.loads = seed, 0

    def load_audio(self, clip_id: str) -> np.ndarray:
        self.loads += 1
        return self.audio[clip_id]

    def load_frames(self, clip_id: str) -> np.ndarray:
        self.loads += 1
        return self.frames[clip_id]

    def digest(self) -> str:
        return f"fake-{self.seed}-{len(self.ids)}"


@pytest.fixture(scope="module")
def encoders():
    return {m: build_encoder(m, TINY) for m in ("audio", "video")}


@pytest.fixture(scope="module")
def data():
    return FakeAV(7)


def raw(data, modality, ids):
    return [data.audio[c] if modality == "audio" else data.frames[c] for c in ids]


# ---------------------------------------------------------------- encoders


def test_tiny_token_counts_follow_the_configs(encoders, data):
    # AST: 2 + f*t patches of 16 with stride 10 over 128 frames x 128 mel bins.
    ast_tokens = 2 + ((128 - 16) // 10 + 1) ** 2
    # ViViT: 1 + (16 frames / 2) * (32 px / 8) ** 2 tubelets.
    vivit_tokens = 1 + (16 // 2) * (32 // 8) ** 2
    for modality, n in (("audio", ast_tokens), ("video", vivit_tokens)):
        enc = encoders[modality]
        assert (enc.num_tokens, enc.width) == (n, 64)
        out = enc.encode(raw(data, modality, data.ids[:3]))
        assert out.shape == (3, n, 64) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_encoders_are_frozen(encoders):
    for enc in encoders.values():
        assert not enc.model.training
        assert not any(p.requires_grad for p in enc.model.parameters())


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_tiny_weights_are_deterministic_and_leave_global_rng_alone(modality, encoders):
    torch.manual_seed(1234)
    expected_draw = torch.rand(4)
    torch.manual_seed(1234)
    again = build_encoder(modality, TINY)
    assert torch.equal(torch.rand(4), expected_draw)  # the build consumed no global randomness
    first = encoders[modality].model.state_dict()
    second = again.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again.fingerprint() == encoders[modality].fingerprint()


def test_fingerprint_tracks_weights_and_modality(encoders):
    fps = {m: e.fingerprint() for m, e in encoders.items()}
    assert fps["audio"] != fps["video"] and all(len(f) == 16 for f in fps.values())
    changed = build_encoder("audio", TINY)
    with torch.no_grad():
        next(changed.model.parameters()).view(-1)[0] += 1e-3
    assert changed.fingerprint() != fps["audio"]


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_batch_composition_does_not_change_a_clips_features(modality, encoders, data):
    enc = encoders[modality]
    batch = enc.encode(raw(data, modality, data.ids[:5]))
    alone = enc.encode(raw(data, modality, [data.ids[3]]))
    torch.testing.assert_close(batch[3:4], alone, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])  # different clips, different features


def test_sample_frames_evenly():
    frames = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1).repeat(3, axis=3)  # frame k holds k
    # 8 targets over positions 0..3 at 3/7 spacing: 0, .43, .86, 1.29, 1.71, 2.14, 2.57, 3.
    assert sample_frames(frames, 8)[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    many = np.arange(31, dtype=np.uint8).reshape(31, 1, 1, 1).repeat(3, axis=3)
    assert sample_frames(many, 6)[:, 0, 0, 0].tolist() == [0, 6, 12, 18, 24, 30]
    assert sample_frames(frames, 4) is frames
    with pytest.raises(ValueError, match="frames"):
        sample_frames(np.zeros((4, 8, 8), np.uint8), 4)


def test_video_with_other_frame_count_and_size_is_resampled(encoders):
    rng = np.random.default_rng(5)
    clip = rng.integers(0, 256, (10, 48, 64, 3), dtype=np.uint8)
    assert encoders["video"].encode([clip]).shape == (1, 129, 64)


def test_paper_random_init_has_the_paper_shapes():
    cfg = ModelsConfig(preset="paper", random_init=True)
    ast, vivit = build_encoder("audio", cfg), build_encoder("video", cfg)
    assert (ast.num_tokens, ast.width) == (1214, 768)  # 2 + 12 * 101 patches
    assert (vivit.num_tokens, vivit.width) == (3137, 768)  # 1 + 16 * 14 * 14 tubelets
    assert vivit.num_frames == 32


@pytest.mark.slow
def test_paper_random_init_encodes_one_clip(data):
    cfg = ModelsConfig(preset="paper", random_init=True)
    for modality, n in (("audio", 1214), ("video", 3137)):
        out = build_encoder(modality, cfg).encode(raw(data, modality, data.ids[:1]))
        assert out.shape == (1, n, 768)


def test_paper_preset_loads_a_local_folder(tmp_path, encoders, data, caplog):
    for modality in ("audio", "video"):
        folder = tmp_path / modality
        encoders[modality].model.save_pretrained(folder)
        if modality == "audio":
            encoders[modality].extractor.save_pretrained(folder)
        cfg = ModelsConfig(preset="paper", audio_path=str(folder), video_path=str(folder))
        with caplog.at_level(logging.WARNING, logger="device_node.encoders"):
            loaded = build_encoder(modality, cfg)
        saved = encoders[modality].model.state_dict()
        assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
        if modality == "audio":  # same weights and extractor: same identity, same features
            assert loaded.fingerprint() == encoders["audio"].fingerprint()
            torch.testing.assert_close(loaded.encode(raw(data, "audio", data.ids[:2])),
                                       encoders["audio"].encode(raw(data, "audio", data.ids[:2])))
        else:  # no extractor config saved: ViViT's published defaults (224 px), named in a warning
            assert "no video extractor settings" in caplog.text
            assert loaded.extractor.crop_size == {"height": 224, "width": 224}
            assert loaded.fingerprint() != encoders["video"].fingerprint()


def test_missing_weights_error_says_how_to_supply_them(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="models.audio_path"):
        build_encoder("audio", ModelsConfig(preset="paper", audio_path=str(missing)))
    with pytest.raises(ValueError, match="no encoder for modality 'text'"):
        build_encoder("text", TINY)


# ---------------------------------------------------------------- feature cache


class CountingEncoder:
    """Wraps an encoder, counting encode calls and clips."""

    def __init__(self, enc):
        self.enc, self.calls, self.clips = enc, 0, 0
        self.modality, self.num_tokens, self.width = enc.modality, enc.num_tokens, enc.width

    def fingerprint(self):
        return self.enc.fingerprint()

    def encode(self, raw_list):
        self.calls += 1
        self.clips += len(raw_list)
        return self.enc.encode(raw_list)


def feature_files(root):
    return sorted(p.name for p in (root / "features").rglob("*.pt"))


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_cache_hit_skips_the_encoder(modality, encoders, data, tmp_path):
    enc = CountingEncoder(encoders[modality])
    first = selected_features(enc, data, data.ids, 8, "window_mean", tmp_path, batch=3)
    assert (enc.calls, enc.clips) == (3, 7)  # 7 clips in batches of 3, each clip encoded once
    assert set(first) == set(data.ids)
    assert all(v.shape == (8, 64) and v.dtype == torch.float32 for v in first.values())
    again = selected_features(enc, data, list(reversed(data.ids)), 8, "window_mean", tmp_path)
    assert enc.calls == 3  # served from disk
    assert all(torch.equal(first[c], again[c]) for c in data.ids)
    assert len(feature_files(tmp_path)) == 1
    assert not list((tmp_path / "features").rglob("*.tmp"))  # the temp file was renamed away


def test_cached_values_are_the_selected_encoder_tokens(encoders, data, tmp_path):
    enc = encoders["video"]
    feats = selected_features(enc, data, data.ids[:4], 16, "window_max", tmp_path)
    direct = select_tokens(enc.encode(raw(data, "video", data.ids[:4])), 16, "window_max")  # (4, 16, 64)
    stacked = torch.stack([feats[c] for c in data.ids[:4]])
    torch.testing.assert_close(stacked, direct, rtol=0, atol=1e-5)


def test_key_changes_with_s_method_clips_and_dataset(encoders, data, tmp_path):
    enc = CountingEncoder(encoders["audio"])
    selected_features(enc, data, data.ids, 8, "window_mean", tmp_path, batch=16)
    selected_features(enc, data, data.ids, 16, "window_mean", tmp_path, batch=16)
    selected_features(enc, data, data.ids, 8, "stride", tmp_path, batch=16)
    selected_features(enc, data, data.ids[:5], 8, "window_mean", tmp_path, batch=16)
    other = FakeAV(7, seed=1)
    selected_features(enc, other, other.ids, 8, "window_mean", tmp_path, batch=16)
    assert len(feature_files(tmp_path)) == 5
    assert enc.calls == 5  # one batch each, nothing reused across keys


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_features_do_not_depend_on_the_batch_they_came_in(modality, encoders, data, tmp_path):
    one = selected_features(encoders[modality], data, data.ids, 8, "window_mean", tmp_path / "a", batch=16)
    two = selected_features(encoders[modality], data, data.ids, 8, "window_mean", tmp_path / "b", batch=2)
    for c in data.ids:
        torch.testing.assert_close(one[c], two[c], rtol=0, atol=1e-5)


def test_unreadable_cache_file_is_rebuilt(encoders, data, tmp_path):
    enc = CountingEncoder(encoders["audio"])
    first = selected_features(enc, data, data.ids, 4, "stride", tmp_path, batch=16)
    (path,) = (tmp_path / "features" / "audio").glob("*.pt")
    path.write_bytes(b"truncated")
    again = selected_features(enc, data, data.ids, 4, "stride", tmp_path, batch=16)
    assert enc.calls == 2
    assert all(torch.equal(first[c], again[c]) for c in data.ids)
