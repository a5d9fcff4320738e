"""The README and the documentation: the Quickstart is what CI runs, the config reference is current, every relative link resolves."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "engraft run configs/hemophilia_a_lentiviral.yaml" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_config_reference_is_up_to_date():
    """docs/config_reference.md is generated from the schema; regenerate it after schema changes."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"])
    assert proc.returncode == 0, "run: python scripts/config_reference.py"


# ----------------------------------------------------------------------------------
# links in the README and the documentation
# ----------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def without_code_blocks(text: str) -> str:
    """The text without fenced code blocks (a '#' line there is no heading, brackets no link)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The text without code blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", without_code_blocks(text), flags=re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def broken_links(path) -> list[str]:
    """Relative links of one markdown file whose file, or heading anchor, does not exist."""
    broken = []
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        if not where.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and where.suffix == ".md" and anchor not in heading_anchors(where.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


def test_every_relative_link_in_the_docs_resolves():
    """Every relative link in README.md and docs/**/*.md points to a file that exists (and a heading there)."""
    broken = {str(p.relative_to(ROOT)): b for p in markdown_files() if (b := broken_links(p))}
    assert not broken, f"broken links: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org/x)\n"
                    "`[code](missing.md)`\n[gone](missing.md) [no anchor](there.md#elsewhere)\n",
                    encoding="utf-8")
    assert broken_links(page) == ["missing.md (no such file)", "there.md#elsewhere (no heading with that anchor)"]
