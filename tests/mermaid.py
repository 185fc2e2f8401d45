"""Mermaid itself, in headless Chromium: the chart text the bot writes is rendered exactly as a
browser renders it (npm `mermaid` 11's dist/mermaid.min.js, loaded into a blank page)."""
from __future__ import annotations

import re
from typing import Any

from tests.browser import chromium, ensure_npm

BLOCK = re.compile(r"```mermaid\n(.*?)\n```", re.S)

RENDER = """async (text) => {
  mermaid.initialize({startOnLoad: false, securityLevel: "strict"});
  try {
    const parsed = await mermaid.parse(text);
    const {svg} = await mermaid.render("chart", text);
    return {type: parsed.diagramType, svg: svg, error: null};
  } catch (error) {
    return {type: null, svg: null, error: String(error && error.message || error)};
  }
}"""


def blocks(markdown: str) -> list[str]:
    """The ```mermaid blocks of a comment body, as GitHub hands them to Mermaid."""
    return BLOCK.findall(markdown)


async def render(texts: list[str]) -> list[dict[str, Any]]:
    """Each text through `mermaid.parse` and `mermaid.render`: {type, svg, error}."""
    script = ensure_npm("mermaid", "11") / "dist" / "mermaid.min.js"
    results = []
    async with chromium() as browser:
        page = await browser.new_page()
        await page.set_content("<!doctype html><html><body></body></html>")
        await page.add_script_tag(path=str(script))
        for text in texts:
            results.append(await page.evaluate(RENDER, text))
    return results
