"""YAML presets, their schema (`configs.schema`) and their loader (`configs.loader`)."""
from configs.loader import dump_config, embedded_default_path, load_config, replace, to_dict
from configs.schema import MODALITIES, Config, ConfigError, LinkConfig

__all__ = ["MODALITIES", "Config", "ConfigError", "LinkConfig", "dump_config", "embedded_default_path",
           "load_config", "replace", "to_dict"]
