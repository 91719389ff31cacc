"""known_hosts read as OpenSSH reads it: every line checked against ``ssh-keygen -F`` on the same file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_gateway import ssh_known_hosts
from tests.servers import keygen
from tests.support import cli_path, write_config

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")

ARN = "arn:aws:states:us-east-1:123456789012:activity:unused"
FOUND = re.compile(r"^# Host \S+ found: line (\d+) ?(REVOKED|CA)?$")
HOSTS = ["a.example", "b.example", "A.Example", "127.0.0.1", "::1", "x-y.example.org"]
ATOMS = [
    "a.example",
    "b.example",
    "*.example",
    "?.example",
    "*",
    "127.0.0.?",
    "[a.example]:2222",
    "[*.example]:2222",
    "[127.0.0.1]:2222",
    "[::1]:2222",
    "x-y.example.*",
    "A.EXAMPLE",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("keys")
    return {kind: _public(keygen(folder / kind, kind)) for kind in ("ed25519", "ecdsa", "rsa")}


def _public(path: Path) -> str:
    kind, body = Path(f"{path}.pub").read_text().split()[:2]
    return f"{kind} {body}"


def oracle(known_hosts: Path, name: str) -> set[tuple[int, str | None]]:
    """The lines OpenSSH finds for ``name``, with their marker."""
    done = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True, check=False
    )
    found = set()
    for line in done.stdout.splitlines():
        match = FOUND.match(line)
        if match:
            marker = {"REVOKED": ssh_known_hosts.REVOKED, "CA": ssh_known_hosts.CERT_AUTHORITY}.get(match[2] or "")
            found.add((int(match[1]), marker))
    return found


def ours(known_hosts: Path, name: str) -> set[tuple[int, str | None]]:
    entries = ssh_known_hosts.parse(known_hosts.read_text())
    return {(e.line, e.marker) for e in entries if e.matches(name)}


def names(host: str, port: int) -> str:
    return ssh_known_hosts.lookup_name(host, port)


def bad_keys(keys: dict[str, str]) -> list[str]:
    return [
        keys["ed25519"].replace("ssh-ed25519", "ssh-rsa"),  # type and blob disagree
        keys["rsa"][:-7],  # truncated base64
        "ssh-ed25519 !!notbase64!!",
        "ssh-unknown AAAAB3NzaC1yc2E=",
        "ssh-ed25519",
    ]


def openssh_reads(key: str, tmp_path: Path) -> bool:
    """Whether OpenSSH reads ``TYPE BASE64`` as a public key."""
    (tmp_path / "key.pub").write_text(key + "\n")
    return subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "key.pub")], capture_output=True).returncode == 0


def line_strategy(keys: dict[str, str]) -> st.SearchStrategy[tuple[str, str | None]]:
    """A known_hosts line and the key written on it (None for lines without one)."""
    key = st.sampled_from(sorted(keys.values()) + bad_keys(keys))
    patterns = st.lists(
        st.tuples(st.booleans(), st.sampled_from(ATOMS)).map(lambda t: ("!" if t[0] else "") + t[1]),
        min_size=1,
        max_size=3,
    ).map(",".join)
    marker = st.sampled_from(["", "", "", "@revoked ", "@cert-authority ", "@bogus "])
    comment = st.sampled_from(["", " a comment", "\t# x"])
    entry = st.builds(lambda m, p, k, c: (f"{m}{p} {k}{c}", k), marker, patterns, key, comment)
    junk = st.sampled_from(["", "# comment", "   ", "onlyonefield", "@revoked"]).map(lambda line: (line, None))
    return st.one_of(entry, junk)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_line_matches_the_hosts_openssh_finds_it_for(
    data: st.DataObject, keys: dict[str, str], tmp_path: Path
) -> None:
    drawn = data.draw(st.lists(line_strategy(keys), min_size=1, max_size=12))
    lines = [line for line, _ in drawn]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(lines) + "\n")
    name = names(data.draw(st.sampled_from(HOSTS)), data.draw(st.sampled_from([22, 2222, 8022])))
    # ssh-keygen -F also lists lines whose key OpenSSH cannot read; such a key never matches a server's.
    readable = {n for n, (_, key) in enumerate(drawn, start=1) if key is not None and openssh_reads(key, tmp_path)}
    found = {(n, marker) for n, marker in oracle(known_hosts, name) if n in readable}
    assert ours(known_hosts, name) == found, (name, lines)


def test_hashed_names_match_as_openssh_hashes_them(keys: dict[str, str], tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    plain = [f"{h} {keys['ed25519']}" for h in ("a.example", "[a.example]:2222", "127.0.0.1,b.example")]
    known_hosts.write_text("\n".join([*plain, f"@revoked c.example {keys['rsa']}"]) + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().count("|1|") >= 4  # every plain name is hashed now
    for host, port in [("a.example", 22), ("a.example", 2222), ("b.example", 22), ("127.0.0.1", 22), ("c.example", 22)]:
        name = names(host, port)
        assert ours(known_hosts, name) == oracle(known_hosts, name) != set(), name
    assert ours(known_hosts, names("a.example", 2223)) == set()


def test_revoked_keys_are_never_trusted_and_types_follow_the_pinned_keys(keys: dict[str, str]) -> None:
    text = "\n".join(
        [
            f"[h.example]:2222 {keys['rsa']}",
            f"[h.example]:2222 {keys['ecdsa']}",
            f"@revoked * {keys['ecdsa']}",
            f"@cert-authority [*.example]:2222,*.example {keys['ed25519']}",
            "garbage line here",
        ]
    )
    pinned = ssh_known_hosts.host_keys(ssh_known_hosts.parse(text), "H.example", 2222)
    assert [k.get_name() for k in pinned.trusted] == ["ssh-rsa"]
    assert pinned.is_revoked(ssh_known_hosts.decode_key(*keys["ecdsa"].split()))
    assert pinned.authority_lines == (4,)
    assert ssh_known_hosts.unsupported_authority(pinned, "h.example", 2222) is None
    offered = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
    assert ssh_known_hosts.algorithms_for(pinned.trusted, offered) == ("rsa-sha2-512", "rsa-sha2-256")

    only_ca = ssh_known_hosts.host_keys(ssh_known_hosts.parse(text), "other.example", 22)
    problem = ssh_known_hosts.unsupported_authority(only_ca, "other.example", 22)
    assert problem is not None and "line 4: @cert-authority is not supported" in problem


def test_fingerprints_are_openssh_sha256(keys: dict[str, str], tmp_path: Path) -> None:
    for kind, line in keys.items():
        (tmp_path / kind).write_text(line + "\n")
        done = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / kind)], capture_output=True, text=True)
        expected = done.stdout.split()[1]
        assert ssh_known_hosts.fingerprint(ssh_known_hosts.decode_key(*line.split())) == expected
        assert expected.startswith("SHA256:")


def validate(tmp_path: Path, **conn: object) -> subprocess.CompletedProcess[str]:
    conn_config = {"type": "sftp", "host": "h.example", "port": 2222, "username": "u", "password": "pw", **conn}
    gateway = {"activity_arn": ARN, "conn_config": conn_config, "num_connections": 1}
    config = write_config(tmp_path / "collections.yml", [{"id": "P", "gateway_config": gateway}])
    return subprocess.run([cli_path(), "validate", "--config", str(config)], capture_output=True, text=True)


def test_validate_refuses_host_key_settings_no_connection_could_use(keys: dict[str, str], tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    cases = {
        "a CA line only": ([f"@cert-authority [*.example]:2222 {keys['rsa']}"], "@cert-authority is not supported"),
        "a revoked key": ([f"[h.example]:2222 {keys['rsa']}", f"@revoked * {keys['rsa']}"], "no usable"),
        "the port-22 name": ([f"h.example {keys['rsa']}"], "no usable (unrevoked) key for [h.example]:2222"),
        "junk only": (["@bogus", "h.example ssh-rsa AAAA"], "no usable"),
    }
    for case, (lines, message) in cases.items():
        known_hosts.write_text("\n".join(lines) + "\n")
        done = validate(tmp_path, known_hosts_file=str(known_hosts))
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert "conn_config.known_hosts_file" in done.stderr and message in done.stderr, (case, done.stderr)
        assert "Traceback" not in done.stderr

    bad_key = validate(tmp_path, host_key="ssh-ed25519 AAAAnotakey")
    assert bad_key.returncode == 2 and "conn_config.host_key: not a valid ssh-ed25519 key" in bad_key.stderr

    known_hosts.write_text(f"@cert-authority * {keys['ed25519']}\n[h.example]:2222 {keys['rsa']}\n")
    assert validate(tmp_path, known_hosts_file=str(known_hosts)).returncode == 0
    assert validate(tmp_path, known_hosts_file=str(tmp_path / "absent")).returncode == 0  # checked on connect
