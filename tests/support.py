"""What tests share besides fixtures: where the kit lives, and settings for a test."""

from __future__ import annotations

from pathlib import Path

from sleeve_common.settings import Settings

__all__ = ["BASE_WEIGHTS", "DISCOGS5", "KIT", "REPO_ROOT", "make_settings"]

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT = REPO_ROOT.parent / "shared"  # read-only, beside the checkout (CI has it there too)
DISCOGS5 = KIT / "datasets" / "discogs5"
BASE_WEIGHTS = KIT / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    """Settings for a test: its own database, local store and data folder."""
    values: dict[str, object] = {
        "database_url": database_url,
        "store_url": f"file://{tmp_path / 'store'}",
        "data_dir": tmp_path / "var",
        "base_weights": str(BASE_WEIGHTS),
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
