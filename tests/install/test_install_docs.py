"""The README's Install section says what an install needs: the Linux system packages Qt needs as
one apt line (the Makefile's GUI_PACKAGES, which `make test` installs), and the size of the
install measured by scripts/install_size.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def makefile_gui_packages() -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return re.search(r"^GUI_PACKAGES := (.+)$", text, re.MULTILINE).group(1).split()


def test_the_readme_apt_line_is_the_makefiles_gui_packages() -> None:
    install = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in install.splitlines() if line.startswith("sudo apt-get install ")]
    assert len(lines) == 1, lines
    assert lines[0].split()[3:] == makefile_gui_packages()


def test_install_size_prints_the_groups_and_the_total() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_size.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for group in ("NVIDIA CUDA libraries", "triton", "torch and torchvision", "total"):
        assert re.search(rf"{group}: +\d+\.\d GB", result.stdout), result.stdout
