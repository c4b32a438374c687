"""The documentation site builds in strict mode, and strict mode catches broken links and
missing API references (so `make test`'s docs build guards them)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]


def build(tmp: Path, extra: str) -> subprocess.CompletedProcess:
    shutil.copytree(ROOT / "docs", tmp / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp / "mkdocs.yml")
    (tmp / "lightning_des").symlink_to(ROOT / "lightning_des")
    with open(tmp / "docs" / "index.md", "a") as fh:
        fh.write(extra)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([*MKDOCS, "-d", str(tmp / "site")], cwd=tmp, capture_output=True, text=True, env=env, timeout=300)


def test_docs_build_strict(tmp_path):
    proc = build(tmp_path, "")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "data" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link_and_a_missing_reference(tmp_path):
    proc = build(tmp_path / "a", "\n[gone](no_such_page.md)\n")
    assert proc.returncode != 0 and "no_such_page.md" in proc.stdout + proc.stderr
    proc = build(tmp_path / "b", "\n::: lightning_des.no_such_module\n")
    assert proc.returncode != 0 and "no_such_module" in proc.stdout + proc.stderr
