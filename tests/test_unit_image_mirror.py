"""scripts/image/make-base.sh: the Debian mirrors come from the machine's apt sources, DEBIAN_MIRROR overrides."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "image" / "make-base.sh"

DEB822 = """\
Types: deb
# a comment inside the paragraph
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def mirrors(etc: Path, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DEBIAN_")} | {"APT_ETC": str(etc)} | env
    out = subprocess.run(["bash", str(SCRIPT), "--print-mirrors"], env=full, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert mirrors(tmp_path) == "mirror=http://mirror.example/debian security=http://mirror.example/debian-security"


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
        "deb [trusted=yes] http://one.example/security bookworm-security main\n"
    )
    assert mirrors(tmp_path) == "mirror=http://one.example/debian security=http://one.example/security"


def test_suite_match_wins_over_path_and_disabled_sources_are_ignored(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a.sources").write_text(
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\nURIs: http://other-release.example/debian\nSuites: trixie\n"
    )
    (d / "b.list").write_text("deb http://right.example/deb bookworm main\n")
    (d / "c.list.disabled").write_text("deb http://never.example/debian bookworm main\n")
    assert mirrors(tmp_path).startswith("mirror=http://right.example/deb ")


def test_another_release_host_still_names_its_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://m.example/debian trixie main\n")
    assert mirrors(tmp_path) == "mirror=http://m.example/debian security="


def test_environment_overrides(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    out = mirrors(tmp_path, DEBIAN_MIRROR="http://mine/debian", DEBIAN_SECURITY_MIRROR="http://mine/sec")
    assert out == "mirror=http://mine/debian security=http://mine/sec"


@pytest.mark.parametrize("sources", ["", "deb http://m.example/ubuntu jammy main\n"])
def test_no_debian_source_is_a_clear_error(tmp_path: Path, sources: str) -> None:
    (tmp_path / "sources.list").write_text(sources)
    assert mirrors(tmp_path) == "mirror= security="
    # Without --print-mirrors the script stops before touching buildah; BASE_IMAGE from a
    # registry would skip everything, so keep the default localhost image.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBIAN_")} | {"APT_ETC": str(tmp_path)}
    env.pop("BASE_IMAGE", None)
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "set DEBIAN_MIRROR" in out.stderr
