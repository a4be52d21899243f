"""The README stays user documentation: at most 10 KB, CI's exact test command, a generated results
table between markers, and links to docs/ pages that exist."""

from __future__ import annotations

import re
from pathlib import Path

from ttds.bench.report import README_BEGIN, README_END

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_readme_is_short_and_holds_ci_test_command():
    text = README.read_text()
    assert len(text.encode()) <= 10 * 1024, "README.md must stay <= 10 KB: results go to docs/results.md, history to docs/findings.md"
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(ln for ln in ci.splitlines() if "pytest" in ln)
    assert f"```bash\n{command}\n```" in text, "the README's test command must be byte-identical to the one .ci/run runs"


def test_results_table_is_generated_between_markers():
    text = README.read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1 and text.index(README_BEGIN) < text.index(README_END)
    table = text[text.index(README_BEGIN) + len(README_BEGIN) : text.index(README_END)]
    assert "docs/results.md" in table or not table.strip(), "the table is written by jobs/report.py, which links the page"


def test_local_links_resolve():
    """Links from the README and docs/ pages point at files that exist (pages another change adds are named here)."""
    pending = {"docs/configuration.md", "docs/serving.md", "docs/scaling.md"}  # written by their own changes
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
            assert path.exists() or rel in pending, f"{page.name}: link to {target} has no file"
