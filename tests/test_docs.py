"""The pages a user reads: the configuration reference is what the config declares, the front page stays a front
page, every page a page links to exists, and no page names a path outside the repository."""
import glob
import os
import re
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import config_reference  # noqa: E402

PAGES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "BENCHMARKS.md"),
         *glob.glob(os.path.join(ROOT, "docs", "*.md"))]


def test_the_configuration_reference_is_current():
    with open(config_reference.PAGE) as stream:
        assert stream.read() == config_reference.reference(), "run: python scripts/config_reference.py"


def test_the_readme_is_a_front_page_of_at_most_250_lines():
    assert len(open(os.path.join(ROOT, "README.md")).read().splitlines()) <= 250


def test_every_linked_page_exists():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+?\.md)\)", open(page).read()):
            assert os.path.isfile(os.path.join(os.path.dirname(page), target)), (page, target)


def test_no_page_or_config_names_a_path_outside_the_repository():
    for path in PAGES + glob.glob(os.path.join(ROOT, "configs", "*.yaml")) + [os.path.join(ROOT, "run.sh")]:
        assert "../shared" not in open(path).read(), path
