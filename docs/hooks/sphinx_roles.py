"""mkdocs hook: the API pages render docstrings whose cross-references are Sphinx roles
(``:class:`~ragroute.pipeline.Pipeline```), which mkdocstrings shows as raw text
(``:class:<code>~ragroute.pipeline.Pipeline</code>``). Each becomes the code it names (the last
part only after a ``~``, as Sphinx shows it), linked to its API entry where the site has one."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const|ref|term):<code>(~?)([^<]+?)</code>"
)


_TITLED = re.compile(r"(.+?)\s*&lt;(.+?)&gt;", re.S)  # :meth:`run <ragroute.graph.ppr.PPREngine.run>`


def _replace(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    titled = _TITLED.fullmatch(target)
    if titled:
        shown, target = " ".join(titled.group(1).split()), titled.group(2).strip()
    else:
        shown = target.rsplit(".", 1)[-1] if short else target
    identifier = target.removesuffix("()")
    if "." not in identifier:  # a bare name: no API entry to link to
        return f"<code>{shown}</code>"
    # resolved by mkdocs-autorefs after every page is rendered; ``optional``: no warning (and no
    # link) where the site holds no entry for it (a private name, another library's)
    return f'<autoref optional identifier="{identifier}"><code>{shown}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_replace, html)
