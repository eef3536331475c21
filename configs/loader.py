"""Loading the config tree: YAML presets plus dotted overrides, validated into the
frozen dataclasses of `configs.schema`; unknown keys are an error naming the key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from configs.schema import Config, ConfigError, require


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Build a value of type `tp` from plain YAML data, naming `key` on error."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        require(isinstance(value, dict), key, f"must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is tuple:
        require(isinstance(value, (list, tuple)), key, "must be a list")
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is None:
            require(len(value) == len(args), key, f"must have {len(args)} items")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        require(isinstance(value, dict), key, "must be a mapping")
        return dict(value)
    if tp is bool:
        require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        require(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"config key '{key}': unknown key; known keys here: {sorted(names)}")
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"config section '{prefix or '<root>'}': {e}") from e


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'channel.snr_db=6' -> ('channel.snr_db', 6). Values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def embedded_default_path() -> Path:
    """The embedded default preset (tiny models, generated data, CPU)."""
    return Path(__file__).with_name("tiny.yaml")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML preset (the embedded default when `path` is None) plus overrides."""
    path = Path(path) if path else embedded_default_path()
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML file, "
                          f"e.g. {embedded_default_path()}")
    with open(path, encoding="utf-8") as f:
        tree = yaml.safe_load(f) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return _build(Config, tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. a run's config.yaml)."""
    return _build(Config, tree)


def to_dict(cfg: Any) -> Any:
    """Plain-data form of a config (tuples as lists) for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def replace(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with dotted overrides applied (validated)."""
    tree = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_digest(cfg: Config) -> str:
    """A short hash of the resolved config; every node of a run must agree on it."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]
