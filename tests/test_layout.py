"""The package's shape: what the wheel holds, and which code imports which."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> the package it installs as (pyproject.toml's package-dir)
ROOTS = {"wsbus": "wsbus", "cli": "wsbus.cli", "compat": "wsbus.compat"}


def _packages() -> set[str]:
    found = set()
    for folder, name in ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_the_wheel_holds_every_package(tmp_path: Path) -> None:
    """pyproject.toml lists packages by hand: a new subpackage must be added there.
    Built from a copy of the tracked files, as from a clean clone (setuptools leaves a
    build/ folder in the tree it builds, which would carry moved modules along)."""
    tracked = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    src = tmp_path / "src"
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("wsbus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    inside = {
        n.removesuffix("/__init__.py").replace("/", ".")
        for n in names
        if n.endswith("/__init__.py")
    }
    assert _packages() <= inside, f"missing from the wheel: {sorted(_packages() - inside)}"
    assert "wsbus/py.typed" in names
    # the PROTOCOL.md generator (docs/protodoc/) is a repository tool, not shipped
    assert not [n for n in names if "protodoc" in n], "a protodoc module is in the wheel"


def test_server_code_imports_no_client_code() -> None:
    probe = (
        "import sys, wsbus.server, wsbus.hub, wsbus.compat.http; "
        "print(sorted(m for m in sys.modules if m.startswith('wsbus.cli') "
        "or m in ('wsbus.client', 'wsbus.client_inbox', 'wsbus.client_link', "
        "'wsbus.client_requests', 'wsbus.oneshot', 'wsbus.handshake')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
