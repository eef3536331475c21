"""`tokcom prepare RAW_VIDEO_DIR OUT_DIR`: raw videos -> the extracted media layout.

For every video `<id>.<ext>` directly inside RAW_VIDEO_DIR (ext one of VIDEO_EXTENSIONS; the
id keeps any inner dots, e.g. VALOR's "CEfOX4fYlsY_20.000_30.000") this writes

    OUT_DIR/ast_audio/<id>.wav                    16 kHz mono 16-bit PCM (absent: no audio track)
    OUT_DIR/vivit_frames/<id>/frame_0001.png ...  RGB frames, optionally resized
    OUT_DIR/vivit_frames/<id>/.done               JSON marker, written last
    OUT_DIR/prepare_report.json                   {"done", "skipped", "failed", "no_audio"}

Frame sampling, with times measured from the first decoded frame and each frame covering
[its time, its time + its duration):
- `fps` mode (default 1 frame/s, as MUSIC-AVQA's extraction): target times k / fps for every
  k with k / fps inside the video; each target takes the frame on screen at that instant.
  A 2 s clip gives 2 frames, a 60 s clip 60, as FFmpeg's `fps` filter does (which rounds to
  the nearest frame instead, so a pick may differ from FFmpeg's by under one frame interval).
- `frames=N` mode: N targets at the centres of N equal segments of the video stream's
  duration; the same covering rule.
Times are exact fractions, so a target on a frame boundary never flips with rounding.

Resumable: a video whose `.done` marker records the same sampling settings (and whose wav is
present when the marker says it has audio) is skipped; anything else is redone from scratch.
The wav is written to `<id>.wav.partial` and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import shutil
import wave
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from fractions import Fraction
from itertools import count
from pathlib import Path
from typing import Iterator

import av
from PIL import Image
from tqdm import tqdm

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv")
AUDIO_RATE = 16_000
AUDIO_DIR = "ast_audio"
FRAMES_DIR = "vivit_frames"
MARKER = ".done"
REPORT = "prepare_report.json"


@dataclass(frozen=True)
class _Sampling:
    """How frames are picked and sized; stored in each `.done` marker to detect stale outputs."""

    fps: float | None
    frames: int | None
    size: tuple[int, int] | None  # (width, height)


@dataclass(frozen=True)
class _Job:
    video: str
    vid: str
    out_dir: str
    sampling: _Sampling


def _list_videos(raw_dir: Path) -> dict[str, list[Path]]:
    """Map each id to the video files carrying it (more than one file is a naming clash)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(raw_dir.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS:
            found.setdefault(path.stem, []).append(path)  # stem strips only the final extension
    return found


def _frame_dir(out_dir: Path, vid: str) -> Path:
    return out_dir / FRAMES_DIR / vid


def _wav_path(out_dir: Path, vid: str) -> Path:
    return out_dir / AUDIO_DIR / f"{vid}.wav"


def _read_marker(out_dir: Path, vid: str, sampling: _Sampling) -> dict | None:
    """The `.done` marker's content if the video's outputs are complete for `sampling`, else None."""
    try:
        marker = json.loads((_frame_dir(out_dir, vid) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("sampling") != json.loads(json.dumps(asdict(sampling))):
        return None
    last = _frame_dir(out_dir, vid) / f"frame_{marker.get('n_frames', 0):04d}.png"
    if not last.is_file() or (marker.get("audio") and not _wav_path(out_dir, vid).is_file()):
        return None
    return marker


def _target_times(sampling: _Sampling, duration: Fraction | None) -> Iterator[Fraction]:
    """Sampling instants in seconds from the video's first frame (unbounded in fps mode)."""
    if sampling.frames is None:
        step = 1 / Fraction(sampling.fps).limit_denominator(10**6)
        return (k * step for k in count())
    if duration is None or duration <= 0:
        raise ValueError("the video stream declares no duration; sample it with --fps instead of --frames")
    return ((2 * k + 1) * duration / (2 * sampling.frames) for k in range(sampling.frames))


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> Fraction | None:
    if stream.duration is not None and stream.time_base is not None:
        return stream.duration * stream.time_base
    if container.duration is not None:
        return Fraction(container.duration, av.time_base)
    return None


class _FramePicker:
    """Streams decoded video frames and hands back, per target time, the frame covering it."""

    def __init__(self, targets: Iterator[Fraction], stream: av.VideoStream, bounded: bool):
        self.targets, self.bounded = targets, bounded  # bounded: every target is emitted, even past the end
        self.next_t = next(targets, None)
        self.rate = stream.average_rate or stream.guessed_rate
        self.prev: av.VideoFrame | None = None
        self.prev_t = self.first_pts = None
        self.index = 0

    def _time(self, frame: av.VideoFrame) -> Fraction:
        if frame.pts is None or frame.time_base is None:
            return self.index / Fraction(self.rate)
        if self.first_pts is None:
            self.first_pts = frame.pts
        return (frame.pts - self.first_pts) * frame.time_base

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        t = self._time(frame)
        picked = []
        while self.prev is not None and self.next_t is not None and t > self.next_t:
            picked.append(self.prev)
            self.next_t = next(self.targets, None)
        self.prev, self.prev_t, self.index = frame, t, self.index + 1
        return picked

    def finish(self) -> list[av.VideoFrame]:
        if self.prev is None:
            raise ValueError("the video stream decoded to no frames; the file is truncated or empty")
        if self.prev.duration and self.prev.time_base is not None:
            end = self.prev_t + self.prev.duration * self.prev.time_base
        else:
            end = self.prev_t + 1 / Fraction(self.rate)
        picked = []
        while self.next_t is not None and (self.bounded or self.next_t < end):
            picked.append(self.prev)
            self.next_t = next(self.targets, None)
        return picked


class _WavSink:
    """Resamples decoded audio to 16 kHz mono s16 and streams it into a temporary wav."""

    def __init__(self, path: Path, stream: av.AudioStream):
        self.path, self.tmp = path, path.with_name(path.name + ".partial")
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        # Encoders pad the last frame (AAC: up to 1023 samples); the declared duration trims it.
        seconds = stream.duration * stream.time_base if stream.duration and stream.time_base else None
        self.left = round(seconds * AUDIO_RATE) if seconds else None
        self.wav = wave.open(str(self.tmp), "wb")
        self.wav.setnchannels(1)
        self.wav.setsampwidth(2)
        self.wav.setframerate(AUDIO_RATE)

    def __enter__(self) -> "_WavSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.push(None)  # flush the resampler's delay line
            self.wav.close()
            os.replace(self.tmp, self.path)
        else:
            self.wav.close()
            self.tmp.unlink(missing_ok=True)

    def push(self, frame: av.AudioFrame | None) -> None:
        for out in self.resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype("<i2")  # (n,) packed mono
            if self.left is not None:
                samples, self.left = samples[: self.left], max(0, self.left - len(samples))
            self.wav.writeframes(samples.tobytes())


def _save_frame(frame: av.VideoFrame, path: Path, size: tuple[int, int] | None) -> None:
    image = frame.to_image()  # RGB
    if size is not None and image.size != size:
        image = image.resize(size, Image.BICUBIC)
    # zlib level 1: PNG writing dominates the run time, and PIL's default level 6 is ~2-4x slower.
    image.save(path, compress_level=1)


def _extract(job: _Job) -> tuple[int, bool]:
    """Write one video's frames, wav and marker; returns (frames written, has audio)."""
    out_dir, sampling = Path(job.out_dir), job.sampling
    frame_dir, wav_path = _frame_dir(out_dir, job.vid), _wav_path(out_dir, job.vid)
    shutil.rmtree(frame_dir, ignore_errors=True)  # partial outputs of an interrupted run
    frame_dir.mkdir(parents=True)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = 0

    def save(frames: list[av.VideoFrame]) -> None:
        nonlocal n_frames
        for frame in frames:
            n_frames += 1
            _save_frame(frame, frame_dir / f"frame_{n_frames:04d}.png", sampling.size)

    with av.open(job.video) as container:
        vstream = container.streams.best("video")
        if vstream is None:
            raise ValueError("the file has no video stream; remove it from RAW_VIDEO_DIR")
        astream = container.streams.best("audio")
        targets = _target_times(sampling, _stream_duration(container, vstream))
        picker = _FramePicker(targets, vstream, bounded=sampling.frames is not None)
        with _WavSink(wav_path, astream) if astream is not None else nullcontext() as sink:
            for packet in container.demux(*(s for s in (vstream, astream) if s is not None)):
                for frame in packet.decode():
                    if packet.stream is vstream:
                        save(picker.push(frame))
                    else:
                        sink.push(frame)
            save(picker.finish())
    if astream is None:
        wav_path.unlink(missing_ok=True)  # a stale wav from an earlier file with this id
    marker = {"sampling": asdict(sampling), "n_frames": n_frames, "audio": astream is not None}
    (frame_dir / MARKER).write_text(json.dumps(marker))
    return n_frames, astream is not None


def _prepare_one(job: _Job) -> dict:
    """Extract one video; returns {"id", "audio", "n_frames"} or {"id", "error"} (never raises)."""
    try:
        n_frames, audio = _extract(job)
    except Exception as exc:  # any decode/IO fault is this video's failure, reported, not the run's
        shutil.rmtree(_frame_dir(Path(job.out_dir), job.vid), ignore_errors=True)
        return {"id": job.vid, "error": f"{type(exc).__name__}: {exc}"}
    return {"id": job.vid, "audio": audio, "n_frames": n_frames}


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[dict]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _prepare_one(job)
        return
    # spawn: the caller may hold threads (torch, gRPC) that a fork would copy half-way.
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_prepare_one, job): job.vid for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # a worker died (e.g. a crash inside FFmpeg)
                yield {"id": futures[future], "error": f"{type(exc).__name__}: {exc}"}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: do not start the queued videos


def prepare(
    raw_dir: str | Path,
    out_dir: str | Path,
    fps: float = 1.0,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    workers: int | None = None,
) -> dict:
    """Extract audio and frames of every video in `raw_dir` into `out_dir`; returns the report.

    `frames`, when given, takes N frames evenly over each video and replaces `fps`.
    `size` is (width, height); None keeps each video's own size. The report
    {"done", "skipped", "failed": [{"id", "error"}], "no_audio"} is also written to
    `out_dir/prepare_report.json`; `no_audio` lists done and skipped videos alike.
    With workers > 1 the pool spawns fresh interpreters, so a calling script needs the usual
    `if __name__ == "__main__":` guard.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw video directory {raw_dir} does not exist; pass the folder of videos")
    if frames is not None and frames < 1:
        raise ValueError(f"frames={frames} must be at least 1")
    if frames is None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps} must be positive")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size={size} must be (width, height) with both at least 1")
    sampling = _Sampling(fps=None if frames is not None else float(fps), frames=frames,
                        size=tuple(size) if size is not None else None)
    videos = _list_videos(raw_dir)
    if not videos:
        kinds = ", ".join(VIDEO_EXTENSIONS)
        raise FileNotFoundError(f"no videos ({kinds}) found in {raw_dir}; check the path")
    out_dir.mkdir(parents=True, exist_ok=True)

    report: dict = {"done": [], "skipped": [], "failed": [], "no_audio": []}
    jobs = []
    for vid, paths in videos.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            report["failed"].append({"id": vid, "error": f"several files share the id ({names}); keep one"})
            logger.error("video %s failed: %s", vid, report["failed"][-1]["error"])
        elif (marker := _read_marker(out_dir, vid, sampling)) is not None:
            report["skipped"].append(vid)
            if not marker["audio"]:
                report["no_audio"].append(vid)
        else:
            jobs.append(_Job(str(paths[0]), vid, str(out_dir), sampling))
    logger.info("%d videos: %d already prepared, %d to do", len(videos), len(report["skipped"]), len(jobs))

    with tqdm(total=len(videos), initial=len(videos) - len(jobs), unit="video", desc="prepare") as bar:
        for result in _run_jobs(jobs, workers or os.cpu_count() or 1):
            bar.update()
            if "error" in result:
                logger.error("video %s failed: %s", result["id"], result["error"])
                report["failed"].append(result)
                continue
            report["done"].append(result["id"])
            if not result["audio"]:
                logger.warning("video %s has no audio stream; wrote frames only", result["id"])
                report["no_audio"].append(result["id"])
    for key in ("done", "skipped", "no_audio"):
        report[key].sort()
    report["failed"].sort(key=lambda item: item["id"])

    tmp = out_dir / (REPORT + ".partial")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out_dir / REPORT)
    logger.info("prepared %d, skipped %d, failed %d, without audio %d", len(report["done"]),
                len(report["skipped"]), len(report["failed"]), len(report["no_audio"]))
    return report


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text} must be a positive {kind.__name__}")
        return value
    return parse


def _parse_size(text: str) -> tuple[int, int]:
    """'224x224' -> (224, 224) as (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH; write it like 224x224") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} needs a positive width and height")
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw_dir", metavar="RAW_VIDEO_DIR", type=Path, help="folder of videos")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="extraction folder to fill")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--fps", type=_positive(float), help="frames per second to keep (default 1)")
    how.add_argument("--frames", type=_positive(int), help="keep N frames evenly over each video")
    parser.add_argument("--size", type=_parse_size, help="resize frames to WxH (default: keep)")
    parser.add_argument("--workers", type=_positive(int), help="processes (default: all CPU cores)")


def run(args: argparse.Namespace) -> int:
    """0 when every video is prepared (or already was), 1 when any failed or none was found."""
    try:
        report = prepare(args.raw_dir, args.out_dir, fps=args.fps or 1.0, frames=args.frames,
                         size=args.size, workers=args.workers)
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    succeeded = report["done"] or report["skipped"]
    return 0 if succeeded and not report["failed"] else 1
