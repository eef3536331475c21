"""YAML presets and their schema. `load_config(path, overrides)` is the entry."""
from configs.schema import (  # noqa: F401
    MODALITIES,
    Config,
    ConfigError,
    LinkConfig,
    dump_config,
    embedded_default_path,
    load_config,
    replace,
    to_dict,
)
