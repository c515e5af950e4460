"""Rewrite README.md's model table from the registry: ``python tools/update_readme.py``."""

from __future__ import annotations

from pathlib import Path

from wsl_images.zoo import update_readme

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    README.write_text(update_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
