"""The repository explains itself: nothing points outside it, every link and docs/ reference
resolves, and the company-setup reference covers every field of the setup model."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pydantic import BaseModel

from kredit_shared.company_setup import CompanySetup

ROOT = Path(__file__).resolve().parents[2]
# The handbook the project was started from lives outside the repository; nothing may cite it.
OUTSIDE = [
    "ARCHITECTURE" + ".md",
    "PLATFORM-NOTES" + ".md",
    "STYLE" + ".md",
    "/work" + "/",
    "spec" + "/README",
    "../" + "design",
    "../" + "spec",
]


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = []
    for name in names:
        path = ROOT / name
        if path.is_file() and path.suffix not in {".lock", ".json", ".png"}:
            try:
                path.read_text()
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def test_nothing_in_the_repository_points_outside_it():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in tracked_text_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(marker in line for marker in OUTSIDE)
    ]
    assert found == []


def test_every_docs_file_named_anywhere_exists():
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in tracked_text_files()
        for name in re.findall(r"docs/[\w./-]+\.(?:md|yaml)", path.read_text())
        if not (ROOT / name).exists() and "<" not in name
    }
    assert missing == set()


def test_every_relative_link_of_the_markdown_files_resolves():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def test_the_company_setup_reference_names_every_field_of_the_setup():
    reference = (ROOT / "docs" / "company-setup.md").read_text()
    assert [p for p in _field_paths(CompanySetup) if f"`{p}`" not in reference] == []
