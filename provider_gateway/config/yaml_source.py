"""Reading ``collections.yml``: from a path or S3, with its tags and ``${ENV}`` references.

The file is shared, and read with bounds: at most :data:`MAX_CONFIG_BYTES`,
and a document whose aliases (``*name``) would expand beyond
:data:`MAX_EXPANDED_VALUES` values is refused before anything is built.
``${NAME}`` references are expanded by :func:`expand`, only where the loader
asks (the ``gateway_config`` of the providers served).
"""

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
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_VALUES = 1_000_000


@dataclass(frozen=True)
class ResourceRef:
    """A CloudFormation logical resource id, written ``!GitcResource Name``."""

    name: str


class _Loader(yaml.SafeLoader):
    """SafeLoader that knows the ``!GitcResource`` tag and refuses alias bombs."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand beyond the bound, or into a cycle.

    Each node's expanded size is computed once (memoized), so this takes time
    and memory in proportion to the text, however far the aliases would expand.
    """
    in_progress = -1
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_EXPANDED_VALUES:
                raise ConfigError(
                    f"the document expands to more than {MAX_EXPANDED_VALUES} values through its aliases (*name)"
                )
            continue
        state = sizes.get(id(node))
        if state == in_progress:  # met again below itself: only an alias can do that
            raise ConfigError(f"line {node.start_mark.line + 1}: an alias (*name) refers to the node that holds it")
        if state is None:
            sizes[id(node)] = in_progress
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


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
            with body:
                data: bytes = body.read(MAX_CONFIG_BYTES + 1)
        except Exception as exc:  # botocore errors have many shapes; all mean "cannot read"
            raise ConfigError(f"--config {location}: cannot read from S3: {exc}") from exc
    else:
        try:
            with Path(location).open("rb") as file:
                data = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"--config {location}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {location}: over {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {location}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def parse_yaml(text: str, source: str) -> Any:
    """Parse the document, ``!GitcResource`` tags included; ``${NAME}`` is left for :func:`expand`.

    A syntax error is reported by line, column and problem: never with the
    offending line, which may hold a secret.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = "; ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({type(exc).__name__})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


def expand(value: Any, path: str, env: Mapping[str, str] | None = None) -> Any:
    """``value`` with every ``${NAME}`` replaced from ``env`` (default: the process environment).

    An unset variable is a ConfigError naming ``path`` and the variable.
    ``GitcResource! Name`` strings become :class:`ResourceRef`.
    """
    return _expand(value, path, os.environ if env is None else env)


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
