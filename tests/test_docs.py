"""The pages a user reads: the configuration reference is what the config declares, the front page stays a front
page, every page and heading a page links to exists, the fidelity page names only tests and code that exist, and no
page names a path outside the repository."""
import ast
import glob
import os
import re
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from pathlib import Path

import config_reference  # noqa: E402
from helpers import read_yaml

PAGES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "BENCHMARKS.md"),
         *glob.glob(os.path.join(ROOT, "docs", "*.md"))]


def test_the_configuration_reference_is_current():
    with open(config_reference.PAGE) as stream:
        assert stream.read() == config_reference.reference(), "run: python scripts/config_reference.py"


def test_the_readme_is_a_front_page_of_at_most_250_lines():
    assert len(Path(ROOT, "README.md").read_text().splitlines()) <= 250


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_linked_page_and_heading_exists():
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#]+?\.md)(?:#([\w-]+))?\)", Path(page).read_text()):
            path = os.path.join(os.path.dirname(page), target)
            assert os.path.isfile(path), (page, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", Path(path).read_text(), re.MULTILINE)
                assert anchor in map(slug, headings), (page, target, anchor)


def definitions(path):
    """{qualified name: node} of a module's functions and classes, methods as Class.method."""
    found = {}
    for node in ast.parse(Path(ROOT, path).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
            for inner in getattr(node, "body", []) if isinstance(node, ast.ClassDef) else []:
                if isinstance(inner, ast.FunctionDef):
                    found[f"{node.name}.{inner.name}"] = inner
    return found


def test_the_fidelity_page_names_only_tests_and_code_that_exist():
    text = Path(ROOT, "docs", "fidelity.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| point", "| ---"))]
    assert len(rows) >= 30
    for row in rows:
        assert re.search(r"`tests/test_\w+\.py::\w+`", row), row  # every point has its test
    for path, name in re.findall(r"`(tests/test_\w+\.py)::(\w+)`", text):
        test = definitions(path).get(name)
        assert test is not None, f"{path}::{name} is named in docs/fidelity.md but does not exist"
        assert not [d for d in map(ast.unparse, test.decorator_list) if "skip" in d or "xfail" in d], name
    for path, name in re.findall(r"`(DNSD/[\w/]+\.py):([\w.]+)`", text):
        assert name in definitions(path), f"{path}:{name} is named in docs/fidelity.md but does not exist"
    for path in re.findall(r"`(configs/\w+\.yaml)`", text):
        assert os.path.isfile(os.path.join(ROOT, path)), path


def test_no_page_or_config_names_a_path_outside_the_repository():
    for path in PAGES + glob.glob(os.path.join(ROOT, "configs", "*.yaml")) + [os.path.join(ROOT, "run.sh")]:
        assert "../shared" not in Path(path).read_text(), path


def test_the_citation_file_cites_the_paper_and_the_software_at_its_version():

    import DNSD

    citation = read_yaml(os.path.join(ROOT, "CITATION.cff"))
    assert citation["cff-version"] and citation["version"] == DNSD.__version__
    paper = citation["preferred-citation"]
    assert paper["title"] == "Deep Networks with Stochastic Depth" and paper["year"] == 2016
    assert [author["family-names"] for author in paper["authors"]] == ["Huang", "Sun", "Liu", "Sedra", "Weinberger"]
    assert {"type": "other", "value": "arXiv:1603.09382"} in paper["identifiers"]
