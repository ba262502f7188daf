"""Configs from YAML files (safe loading only) and `--set key=value` overrides, validated once.

YAML and overrides go in; a frozen `Config` comes out, or a `ConfigError` whose one-line message names
the dotted key, the bad value and what is allowed (messages.py).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from resflow.config.families import as_written_before_families
from resflow.config.safeyaml import safe_load
from resflow.config.schema import Config, validate
from resflow.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Finding and reading config files


def bundled_configs_dir() -> Path:
    """The configs shipped with resflow: inside the installed package, or the repo's configs/."""
    here = Path(__file__).resolve().parents[1]  # the package dir (this file is in resflow/config/)
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return here / "configs"


def bundled_config_names() -> list[str]:
    return sorted(p.stem for p in bundled_configs_dir().glob("*.yaml"))


def resolve_config_path(ref: str | Path) -> Path:
    """A YAML path, or the name of a bundled config (`deep50` -> configs/deep50.yaml)."""
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"config {str(ref)!r} is a directory, not a YAML file")
        return path
    text = str(ref)
    # a bare name (deep50, deep50.yaml) or configs/<name>.yaml run from outside the repo
    if ("/" not in text and "\\" not in text) or path.parent == Path("configs"):
        stem = path.name[:-5] if path.name.endswith(".yaml") else path.name[:-4] if path.name.endswith(".yml") else path.name
        bundled = bundled_configs_dir() / f"{stem}.yaml"
        if bundled.is_file():
            return bundled
    names = bundled_config_names()
    hint = difflib.get_close_matches(Path(text).stem, names, n=1)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(
        f"config {text!r} not found: no such file, and not a bundled config (bundled: {', '.join(names) or 'none'}){did_you_mean}"
    )


MAX_CONFIG_BYTES = 4 << 20  # a config is a few hundred bytes; anything above 4 MiB is not one


def read_config_text(path: Path) -> str:
    """The text of config file `path`: a regular file (never a device, a FIFO or a dir: `/dev/zero`
    would be read until memory ran out) of at most MAX_CONFIG_BYTES, read with that bound."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))  # (a FIFO: no wait)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); a config is a YAML file")
        too_big = f"{path}: too large for a config ({{}} bytes; at most {MAX_CONFIG_BYTES >> 20} MiB)"
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(too_big.format(info.st_size))
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):  # bounded even if the file grows while it is read
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(too_big.format(f"over {size}"))
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = read_config_text(path)
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the file (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not valid UTF-8)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file ({err.strerror or err})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping such as 'model: {{depth: 50, width: 64}}'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got a {type(data).__name__}")
    return data


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> plain data (safe loading only), or a ConfigError naming the line and column."""
    try:
        return safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if "could not determine a constructor for the tag" in problem:
            tag = re.findall(r"'([^']*)'", problem)[-1].replace("tag:yaml.org,2002:", "!!")
            problem = f"the tag {tag!r} is not allowed (configs hold plain values; Python objects are never built)"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None


def load_stored_config(data: dict[str, Any]) -> Config:
    """The config of a results dir (its config.yaml as read back), also one written before the block
    families (see `as_written_before_families`)."""
    return validate(as_written_before_families(data), source="config.yaml")


def load_config(ref: str | Path | dict[str, Any], overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load and validate a config from a YAML path, a bundled config name, or a dict."""
    if not isinstance(ref, (str, os.PathLike, dict)):
        raise ConfigError(
            f"load_config: expected a YAML path, a bundled config name ({', '.join(bundled_config_names()[:3])}, ...) "
            f"or a dict, got {type(ref).__name__}"
        )
    if isinstance(ref, dict):
        return validate(ref, overrides=overrides, source="config")
    path = resolve_config_path(ref)
    data = read_yaml(path)
    if path.name == "config.yaml" and (path.parent / "meta.json").is_file():  # a results dir's (maybe an old one)
        data = as_written_before_families(data)
    data.setdefault("name", path.stem)
    return validate(data, overrides=overrides, source=str(path))
