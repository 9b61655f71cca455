"""Set-up files agree: the pins in environment.yml equal pyproject's; README shows the commands."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"])
    for extra in data["optional-dependencies"].values():
        reqs += extra
    return dict(r.split("==") for r in reqs)


def _conda_pins():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)==([^\s#]+)\s*$", line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_every_dependency_is_pinned_exactly():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"]) + [r for e in data["optional-dependencies"].values() for r in e]
    assert all("==" in r for r in reqs), reqs
    assert "torch==2.13.0" in data["dependencies"]


def test_environment_yml_matches_pyproject():
    assert _conda_pins() == _pyproject_pins()
    assert "-e .[notebook,test]" in (ROOT / "environment.yml").read_text()


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make lab" in text and "make test" in text


def test_data_readme_lists_every_shipped_file():
    text = (ROOT / "data" / "README.md").read_text()
    for f in list((ROOT / "data" / "mnist").iterdir()) + list((ROOT / "data" / "ud_english_ewt").glob("*.gz")):
        assert f"{f.parent.name}/{f.name}" in text
