"""The documentation site: a strict build, offline assets, the public surface documented, examples run.

Code examples: every fenced ```` ```python ```` block of a page under ``docs/`` is executed, the blocks
of one page in order in one namespace (a page is one session, as a reader would type it), in a
temporary working directory.  A block that cannot run here -- it needs a trained run or a file the
reader has -- is fenced ```` ```py ```` instead: shown the same, not executed.  Sizes in the executed
examples are tiny, so the whole file stays within a few seconds of example time.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
MKDOCS = Path(sys.executable).with_name("mkdocs")


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("rnnkit_docs_hooks", DOCS / "hooks" / "rnnkit_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()
_FENCE = re.compile(r"^(?P<indent> *)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```\s*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
    """The executable ```` ```python ```` blocks of a Markdown page, dedented, in page order."""
    blocks = []
    for match in _FENCE.finditer(text):
        indent = len(match["indent"])
        blocks.append("".join(line[indent:] for line in match["code"].splitlines(keepends=True)))
    return blocks


PAGES_WITH_EXAMPLES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if python_blocks(p.read_text()))


def test_the_fence_parser_finds_blocks_and_skips_py_fences() -> None:
    text = "a\n```python\nx = 1\n```\n\n```py\nnot_run()\n```\n* item\n\n    ```python\n    y = 2\n    ```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


def test_pages_have_examples() -> None:
    # The pages the issue names carry executed examples; an edit that breaks every fence would show here.
    for page in ("index.md", "getting-started.md", "concepts.md", "textbook.md", "layers.md", "training.md",
                 "interop.md"):
        assert page in PAGES_WITH_EXAMPLES, page


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs_{page}"}
    for number, block in enumerate(python_blocks((DOCS / page).read_text(encoding="utf-8")), start=1):
        code = compile(block, f"docs/{page} (python block {number})", "exec")
        exec(code, namespace)  # noqa: S102 -- the repository's own documentation, run as a reader would


def test_every_public_name_has_a_docstring() -> None:
    missing, total = HOOKS.undocumented()
    assert total > 200  # the surface was found at all
    assert missing == []


def test_every_public_module_has_an_api_page() -> None:
    assert HOOKS.modules_without_page() == []


def test_the_docstring_check_sees_a_missing_docstring() -> None:
    class Documented:
        """A class."""

        def method(self) -> None:
            pass

    def bare() -> None:
        pass

    assert HOOKS._own_doc(Documented) is not None
    assert HOOKS._own_doc(Documented.method) is None
    assert HOOKS._own_doc(bare) is None
    from typing import NamedTuple

    class Generated(NamedTuple):
        a: int

    assert HOOKS._own_doc(Generated) is None  # Python's "Generated(a,)" is not a docstring


def test_cli_reference_is_the_parser() -> None:
    """Every option of every subcommand appears in the generated reference, with its help text."""
    import argparse

    from rnnkit.cli import build_parser

    reference = HOOKS.cli_reference()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"## `rnnkit {name}`" in reference
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in reference, (name, flag)
    assert "(default %(default)s)" not in reference  # help texts are expanded
    assert "| `--seq-len` | `T` | time steps (default 100) |" in reference  # rnnkit diagnose's option


def test_strict_build_is_offline_and_complete(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "public names documented (100 %)" in result.stderr
    # Math: MathJax is served from the site, and the pages use it.
    assert (site / "assets" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000
    concepts = (site / "concepts.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in concepts and "assets/mathjax/tex-svg.js" in concepts
    # Equations link to the functions that compute them (autorefs resolved them, or the build failed).
    assert 'href="api/cells.html#rnnkit.cells.rnn.tanh_backward"' in concepts
    # The CLI reference was generated into its page.
    assert "--seq-len" in (site / "cli.html").read_text(encoding="utf-8")
    assert "rnnkit:cli-reference" not in (site / "cli.html").read_text(encoding="utf-8")
    # Nothing is loaded from another host when a page is viewed: no remote script, style sheet or font.
    remote = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text(encoding="utf-8")), page
    # Every picture a page shows is in the site.
    for page in site.rglob("*.html"):
        for source in re.findall(r'<img[^>]*\bsrc="([^"]+)"', page.read_text(encoding="utf-8")):
            assert (page.parent / source).resolve().is_file(), (page, source)
