"""The protocol registry: one spec per type, one type per bare-URL scheme, ports from the specs."""

from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_gateway.config.model import ConnConfig, field_default
from provider_gateway.errors import InvalidRequest
from provider_gateway.one_file import source_from_url
from provider_gateway.protocols import CONN_TYPES, PROTOCOLS, REGISTRY, SCHEMES, URL_TYPES, check_url
from provider_gateway.urls import parse_url

HOSTS = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)
USERS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


def has_port_field(config_class: type) -> bool:
    return any(f.name == "port" for f in dataclasses.fields(config_class))


def test_every_type_has_exactly_one_spec_and_its_config_class_names_it() -> None:
    counts = Counter(kind for spec in PROTOCOLS for kind in spec.schemes)

    assert counts and all(n == 1 for n in counts.values()), counts
    assert set(REGISTRY) == set(CONN_TYPES) == set(SCHEMES) == set(counts)
    for spec in PROTOCOLS:
        type_hint = typing.get_type_hints(spec.config_class)["type"]
        assert set(typing.get_args(type_hint)) == set(spec.schemes), spec.config_class
    assert set(typing.get_args(ConnConfig)) == {spec.config_class for spec in PROTOCOLS}


def test_every_bare_url_scheme_maps_to_one_type_that_serves_it() -> None:
    counts = Counter(scheme for spec in PROTOCOLS for scheme in spec.url_types)

    assert counts and all(n == 1 for n in counts.values()), counts
    for scheme, kind in URL_TYPES.items():
        assert scheme in SCHEMES[kind], (scheme, kind)
    served = {scheme for schemes in SCHEMES.values() for scheme in schemes}
    assert served <= set(URL_TYPES), "every scheme a provider serves can be downloaded from a bare URL"


def test_url_default_ports_come_from_the_specs() -> None:
    for spec in PROTOCOLS:
        assert set(spec.default_ports) == set(spec.url_types)
        for scheme, port in spec.default_ports.items():
            assert parse_url(f"{scheme}://h.example.org/f").effective_port == port
            if has_port_field(spec.config_class):
                assert field_default(spec.config_class, "port") == port, (spec.config_class, scheme)


@pytest.fixture(scope="module")
def known_hosts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "known_hosts"
    path.write_text("")
    return path


@pytest.mark.parametrize("scheme", sorted(URL_TYPES))
@given(host=HOSTS, user=USERS, port=st.none() | st.integers(1, 65535))
def test_a_bare_url_gets_its_schemes_default_port_and_keeps_an_explicit_one(
    known_hosts: Path, scheme: str, host: str, user: str, port: int | None
) -> None:
    authority = host if port is None else f"{host}:{port}"
    kind = URL_TYPES[scheme]
    spec = REGISTRY[kind]
    want = spec.default_ports[scheme] if port is None else port

    source = source_from_url(f"{scheme}://{user}@{authority}/dir/f.h5", known_hosts_file=str(known_hosts))

    assert type(source.conn) is spec.config_class and source.conn.type == kind
    assert source.url == f"{scheme}://{authority}/dir/f.h5"
    if has_port_field(spec.config_class):
        assert source.conn.port == want  # type: ignore[union-attr]
    check_url(source.conn, f"{scheme}://{host}:{want}/other")
    with pytest.raises(InvalidRequest, match="port"):
        check_url(source.conn, f"{scheme}://{host}:{want % 65535 + 1}/other")


def test_a_scheme_no_spec_builds_is_refused_with_the_ones_that_are() -> None:
    with pytest.raises(InvalidRequest) as refused:
        source_from_url("gopher://h.example.org/f")

    assert all(scheme in str(refused.value) for scheme in URL_TYPES)
