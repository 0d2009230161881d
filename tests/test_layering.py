"""Dependencies point one way: each package imports only what its container installs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "onnxruntime", "fastapi", "keras", "tf2onnx")


def _imported_after(module: str) -> set[str]:
    code = (
        f"import sys, json, {module}, importlib\n"
        f"for name in getattr({module}, '__all__', []) or []: pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return set(json.loads(output.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (
            [
                "sleeve_common.cli",
                "sleeve_common.jobs",
                "sleeve_common.store",
                "sleeve_common.registry",
                "sleeve_common.worker",
            ],
            {
                "tensorflow",
                "onnxruntime",
                "fastapi",
                "keras",
                "sleeve_scraper",
                "sleeve_trainer",
                "sleeve_inference",
            },
        ),
        (
            ["sleeve_inference.app", "sleeve_inference.model_holder"],
            {"tensorflow", "keras", "tf2onnx", "sleeve_trainer", "sleeve_scraper"},
        ),
        (
            # Ray is an optional extra: only a Ray run imports it.
            [
                "sleeve_inference.app",
                "sleeve_inference.cli",
                "sleeve_inference.scoring.jobs",
                "sleeve_inference.scoring.ray_engine",
            ],
            {"ray"},
        ),
        (
            ["sleeve_scraper.scrape", "sleeve_scraper.cli", "sleeve_scraper.jobs"],
            {"tensorflow", "onnxruntime", "fastapi", "sleeve_trainer", "sleeve_inference"},
        ),
        (
            ["sleeve_trainer.cli", "sleeve_trainer.datasets", "sleeve_trainer.jobs"],
            {"onnxruntime", "fastapi", "tensorflow", "sleeve_scraper", "sleeve_inference"},
        ),
    ],
)
def test_package_does_not_pull_in(modules: list[str], forbidden: set[str]) -> None:
    for module in modules:
        leaked = _imported_after(module) & forbidden
        assert not leaked, f"importing {module} loads {sorted(leaked)}"


def test_the_cli_lists_every_service_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sleeve_common", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for command in (
        "db",
        "check",
        "scrape",
        "dataset",
        "train",
        "models",
        "serve",
        "score",
        "worker",
        "run",
    ):
        assert command in result.stdout
