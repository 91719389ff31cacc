"""Reading ``collections.yml``: from a path or S3, with its tags and ``${ENV}`` references."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provider_gateway.errors import ConfigError

RESOURCE_TAG = "!GitcResource"
_RESOURCE_PREFIX = "GitcResource!"
_ENV_REF = re.compile(r"\$(\$)?\{([^}]*)\}")


@dataclass(frozen=True)
class ResourceRef:
    """A CloudFormation logical resource id, written ``!GitcResource Name``."""

    name: str


class _Loader(yaml.SafeLoader):
    """SafeLoader that knows the ``!GitcResource`` tag."""


def _resource(loader: yaml.SafeLoader, node: yaml.Node) -> ResourceRef:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, f"{RESOURCE_TAG} takes a resource name", node.start_mark)
    return ResourceRef(str(loader.construct_scalar(node)).strip())


_Loader.add_constructor(RESOURCE_TAG, _resource)


def read_text(location: str, s3_client_factory: Callable[[], Any] | None = None) -> str:
    """The text at a local path or an ``s3://bucket/key`` URL."""
    if location.startswith("s3://"):
        bucket, _, key = location[5:].partition("/")
        if not bucket or not key:
            raise ConfigError(f"--config {location}: an S3 location is s3://BUCKET/KEY")
        if s3_client_factory is None:
            raise ConfigError(f"--config {location}: no S3 client available")
        try:
            body = s3_client_factory().get_object(Bucket=bucket, Key=key)["Body"]
            return str(body.read().decode("utf-8"))
        except Exception as exc:  # botocore errors have many shapes; all mean "cannot read"
            raise ConfigError(f"--config {location}: cannot read from S3: {exc}") from exc
    try:
        return Path(location).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {location}: cannot read: {exc.strerror}") from exc


def parse_yaml(text: str, source: str) -> Any:
    """Parse the document, turning tags and ``${NAME}`` references into values."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return _expand(document, "", os.environ)


def _expand(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, ResourceRef):
        return ResourceRef(_substitute(value.name, path, env))
    if isinstance(value, str):
        text = _substitute(value, path, env)
        if text.startswith(_RESOURCE_PREFIX):
            return ResourceRef(text[len(_RESOURCE_PREFIX) :].strip())
        return text
    return value


def _substitute(text: str, path: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):  # "$${NAME}" is the escape for a literal "${NAME}"
            return "${" + match.group(2) + "}"
        name = match.group(2)
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(replace, text)
