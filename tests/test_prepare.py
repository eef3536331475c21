"""`tokcom prepare`: real videos encoded here with PyAV go through the extractor.

Expected values come from how the fixtures were made: one solid colour per second, a sine of
known frequency, known durations; the wav is checked with numpy's FFT and the stdlib `wave`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from foundation.data.prepare import add_arguments, prepare, run

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
SOURCE_RATE = 44_100
WAV_RATE = 16_000
# One compressed audio frame (MP3: 1152 samples, AAC: 1024) in wav samples: the length tolerance.
AUDIO_FRAME_TOL = int(np.ceil(1152 / SOURCE_RATE * WAV_RATE))
COLOUR_TOL = 20  # per channel, for yuv420 subsampling and lossy coding of flat colours

# id -> (file name, video codec, audio codec or None, colour of each second, tone Hz)
VIDEOS = {
    "00000093": ("00000093.mp4", "libx264", "aac", (RED, BLUE), 440.0),
    "CEfOX4fYlsY_20.000_30.000": (
        "CEfOX4fYlsY_20.000_30.000.mkv", "mpeg4", "libmp3lame", (GREEN, RED, BLUE), 1000.0),
    "silent": ("silent.mov", "mjpeg", None, (BLUE, GREEN), None),
}


def write_video(path: Path, vcodec: str, acodec: str | None, colours, tone: float | None,
                fps: int = 25, width: int = 64, height: int = 48) -> None:
    """Solid `colours[k]` during second k; a 0.5-amplitude stereo sine at 44.1 kHz if `acodec`."""
    seconds = len(colours)
    with av.open(str(path), "w") as container:
        video = container.add_stream(vcodec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
        audio = None
        if acodec is not None:
            audio = container.add_stream(acodec, rate=SOURCE_RATE)
            audio.layout = "stereo"
        for i in range(seconds * fps):
            image = np.empty((height, width, 3), np.uint8)  # (h, w, rgb)
            image[:] = colours[i // fps]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is None:
            return
        n = seconds * SOURCE_RATE
        tone_samples = (0.5 * 32767 * np.sin(2 * np.pi * tone * np.arange(n) / SOURCE_RATE)).astype(np.int16)
        stereo = np.repeat(tone_samples, 2)[None, :]  # (1, 2n) packed L R L R
        for start in range(0, n, 1024):
            stop = min(n, start + 1024)
            chunk = np.ascontiguousarray(stereo[:, 2 * start: 2 * stop])
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
            frame.sample_rate, frame.pts = SOURCE_RATE, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for name, vcodec, acodec, colours, tone in VIDEOS.values():
        write_video(raw / name, vcodec, acodec, colours, tone)
    (raw / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (raw / "notes.txt").write_text("not a video")
    return raw


@pytest.fixture(scope="module")
def prepared(raw_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    return out, prepare(raw_dir, out, workers=2)


def mean_colour(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))  # (3,)


def frame_files(out: Path, vid: str) -> list[Path]:
    return sorted((out / "vivit_frames" / vid).glob("frame_*.png"))


def test_report_lists_good_failed_and_silent_videos(prepared):
    out, report = prepared
    assert report["done"] == sorted(VIDEOS)
    assert report["skipped"] == []
    assert [item["id"] for item in report["failed"]] == ["corrupt"]
    assert report["failed"][0]["error"]
    assert report["no_audio"] == ["silent"]
    assert json.loads((out / "prepare_report.json").read_text()) == report
    assert not (out / "vivit_frames" / "corrupt").exists()
    assert sorted(p.name for p in (out / "ast_audio").iterdir()) == [
        "00000093.wav", "CEfOX4fYlsY_20.000_30.000.wav"]


@pytest.mark.parametrize("vid", ["00000093", "CEfOX4fYlsY_20.000_30.000"])
def test_wav_is_16k_mono_with_the_tone(prepared, vid):
    out, _ = prepared
    _, _, _, colours, tone = VIDEOS[vid]
    with wave.open(str(out / "ast_audio" / f"{vid}.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, WAV_RATE)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64)
    assert abs(len(samples) - len(colours) * WAV_RATE) <= AUDIO_FRAME_TOL
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak_hz = np.argmax(spectrum) * WAV_RATE / len(samples)
    assert abs(peak_hz - tone) <= 1.0
    assert np.sqrt(np.mean(samples ** 2)) > 0.1 * 32767  # the tone, not near-silence


@pytest.mark.parametrize("vid", sorted(VIDEOS))
def test_one_frame_per_second_with_that_seconds_colour(prepared, vid):
    out, _ = prepared
    _, _, _, colours, _ = VIDEOS[vid]
    files = frame_files(out, vid)
    assert [p.name for p in files] == [f"frame_{k:04d}.png" for k in range(1, len(colours) + 1)]
    for path, colour in zip(files, colours):
        assert Image.open(path).size == (64, 48)
        np.testing.assert_allclose(mean_colour(path), colour, atol=COLOUR_TOL)


def test_frames_mode_spreads_frames_evenly_and_resizes(raw_dir, tmp_path):
    report = prepare(raw_dir, tmp_path, frames=4, size=(32, 16), workers=1)
    assert report["done"] == sorted(VIDEOS)
    # 2 s clip, 4 segment centres at 0.25, 0.75, 1.25, 1.75 s; 3 s clip at 0.375 ... 2.625 s.
    expected = {"00000093": (RED, RED, BLUE, BLUE), "CEfOX4fYlsY_20.000_30.000": (GREEN, RED, RED, BLUE)}
    for vid, colours in expected.items():
        files = frame_files(tmp_path, vid)
        assert len(files) == 4
        for path, colour in zip(files, colours):
            assert Image.open(path).size == (32, 16)
            np.testing.assert_allclose(mean_colour(path), colour, atol=COLOUR_TOL)


def test_fps_two_gives_two_frames_per_second(raw_dir, tmp_path):
    prepare(raw_dir, tmp_path, fps=2.0, workers=1)
    files = frame_files(tmp_path, "00000093")
    assert len(files) == 4  # 2 s x 2 fps: targets 0, 0.5, 1, 1.5 s
    for path, colour in zip(files, (RED, RED, BLUE, BLUE)):
        np.testing.assert_allclose(mean_colour(path), colour, atol=COLOUR_TOL)


def test_rerun_skips_finished_videos_and_redoes_unmarked_ones(raw_dir, tmp_path):
    first = prepare(raw_dir, tmp_path, workers=1)
    assert first["done"] == sorted(VIDEOS)
    stamps = {vid: frame_files(tmp_path, vid)[0].stat().st_mtime_ns for vid in VIDEOS}

    second = prepare(raw_dir, tmp_path, workers=1)
    assert second["done"] == [] and second["skipped"] == sorted(VIDEOS)
    assert second["no_audio"] == ["silent"]  # remembered from the marker
    assert {vid: frame_files(tmp_path, vid)[0].stat().st_mtime_ns for vid in VIDEOS} == stamps

    # An interrupted run: marker missing, a stray frame from before.
    redo = tmp_path / "vivit_frames" / "00000093"
    (redo / ".done").unlink()
    shutil.copy(redo / "frame_0001.png", redo / "frame_0099.png")
    (tmp_path / "ast_audio" / "CEfOX4fYlsY_20.000_30.000.wav").unlink()  # the marker says it has audio
    third = prepare(raw_dir, tmp_path, workers=1)
    assert third["done"] == ["00000093", "CEfOX4fYlsY_20.000_30.000"]
    assert third["skipped"] == ["silent"]
    assert (tmp_path / "ast_audio" / "CEfOX4fYlsY_20.000_30.000.wav").is_file()
    assert [p.name for p in frame_files(tmp_path, "00000093")] == ["frame_0001.png", "frame_0002.png"]

    # Other sampling settings make the old outputs stale.
    fourth = prepare(raw_dir, tmp_path, frames=3, workers=1)
    assert fourth["done"] == sorted(VIDEOS) and fourth["skipped"] == []


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_arguments():
    args = parse(["raw", "out", "--frames", "8", "--size", "224x160", "--workers", "3"])
    assert (args.frames, args.size, args.workers, args.fps) == (8, (224, 160), 3, None)
    for bad in (["raw", "out", "--fps", "1", "--frames", "8"], ["raw", "out", "--size", "224"],
                ["raw", "out", "--fps", "0"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_exit_codes(raw_dir, tmp_path):
    assert run(parse([str(raw_dir), str(tmp_path / "all"), "--workers", "1"])) == 1  # corrupt.mp4 fails
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(raw_dir / "silent.mov", good)
    assert run(parse([str(good), str(tmp_path / "one"), "--workers", "1"])) == 0
    shutil.copy(raw_dir / "00000093.mp4", good / "silent.mp4")  # two files, one id
    assert run(parse([str(good), str(tmp_path / "two"), "--workers", "1"])) == 1
    assert run(parse([str(tmp_path / "missing"), str(tmp_path / "x")])) == 1
