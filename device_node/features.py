"""The encoder-feature cache: each clip goes through the frozen encoder once, never per epoch.

Shapes: `N` clips, `b` batch, `n` encoder tokens, `s` selected tokens, `d` encoder width.

`selected_features` encodes the clips in batches, keeps `select_tokens(., s, method)` of
each (only the selected tokens: the paper preset's full ViViT output is ~10 MB a clip), and
stores them as one float32 tensor (N, s, d) in
`cache_dir/features/<modality>/<key>.pt`, where the key hashes the encoder fingerprint,
the dataset digest, the sorted clip ids, s and the method. Later calls load that file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from device_node.encoders import FrozenEncoder
from device_node.selection import select_tokens

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0


class ClipSource(Protocol):
    """What the cache needs from a dataset (foundation.data's AVDataset has it)."""

    def load_audio(self, clip_id: str) -> np.ndarray: ...  # np.float32 (t,), 16 kHz
    def load_frames(self, clip_id: str) -> np.ndarray: ...  # np.uint8 (t, H, W, 3)
    def digest(self) -> str: ...


def cache_key(fingerprint: str, digest: str, clip_ids: Sequence[str], s: int, method: str) -> str:
    """The cache file's name: a hash of everything the cached features depend on."""
    payload = json.dumps({"encoder": fingerprint, "dataset": digest, "ids": sorted(set(clip_ids)),
                          "s": s, "method": method}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def _load_raw(dataset: ClipSource, modality: str, clip_id: str) -> np.ndarray:
    return dataset.load_audio(clip_id) if modality == "audio" else dataset.load_frames(clip_id)


def _encode_all(encoder: FrozenEncoder, dataset: ClipSource, ids: list[str], s: int, method: str,
                batch: int) -> torch.Tensor:
    parts = []
    t0 = last = time.monotonic()
    with tqdm(total=len(ids), desc=f"encode {encoder.modality}", unit="clip") as bar:
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            full = encoder.encode([_load_raw(dataset, encoder.modality, c) for c in chunk])  # (b, n, d)
            parts.append(select_tokens(full, s, method).float().cpu())  # (b, s, d)
            bar.update(len(chunk))
            done, now = start + len(chunk), time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done == len(ids):  # visible in a log file, where tqdm is off
                last = now
                log.info("encode %s: %d/%d clips, %.1f s per clip", encoder.modality, done, len(ids), (now - t0) / done)
    return torch.cat(parts)  # (N, s, d)


def _save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _load_cached(path: Path, ids: list[str]) -> torch.Tensor | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file fails in many ways (unpickler, zip, I/O); all mean rebuild
        log.warning("feature cache %s is unreadable (%s); recomputing it", path, e)
        return None
    if obj.get("ids") != ids:
        log.warning("feature cache %s holds other clips than its key says; recomputing it", path)
        return None
    return obj["features"]


def selected_features(encoder: FrozenEncoder, dataset: ClipSource, clip_ids: Sequence[str], s: int,
                      method: str, cache_dir: str | Path, batch: int = 4) -> dict[str, torch.Tensor]:
    """Clip id -> its selected features (s, d) float32 on CPU, computed once and cached on disk.

    The encoder runs only on a cache miss, in batches of `batch` clips with a progress bar (small
    batches: a paper-preset ViViT clip takes 20-37 s on one CPU thread, and progress shows per batch).
    """
    if batch < 1:
        raise ValueError(f"batch={batch} must be at least 1")
    ids = sorted(set(clip_ids))
    if not ids:
        raise ValueError("selected_features got no clip ids; pass the split's clip ids")
    key = cache_key(encoder.fingerprint(), dataset.digest(), ids, s, method)
    path = Path(cache_dir) / "features" / encoder.modality / f"{key}.pt"
    feats = _load_cached(path, ids) if path.is_file() else None
    if feats is not None:
        log.info("%s features: %d clips x %d tokens from cache %s", encoder.modality, len(ids), s, path)
        return dict(zip(ids, feats))
    log.info("%s features: encoding %d clips (cache miss, %s)", encoder.modality, len(ids), path)
    feats = _encode_all(encoder, dataset, ids, s, method, batch)  # (N, s, d)
    _save_atomic({"ids": ids, "features": feats, "s": s, "method": method,
                  "encoder": encoder.fingerprint(), "dataset": dataset.digest()}, path)
    return dict(zip(ids, feats))  # rows are views of the (N, s, d) tensor
