"""Golden files: a fixed mini-site whose feeds are compared structurally with tests/golden/.

Regenerate after an intended change with `UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py`
and review the diff of tests/golden/ like any other change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW
from lxml import etree

from newsletter.builder import build
from newsletter.campaign import digest_settings, plan_issue, render_issue
from newsletter.collector import load_catalog
from newsletter.config import load_config

HERE = Path(__file__).parent
SITE = HERE / "data" / "golden"
GOLDEN = HERE / "golden"


def _element(node: etree._Element) -> Any:
    """An XML element as plain data: tag, sorted attributes, text and children, in order."""
    out: dict[str, Any] = {"tag": node.tag}
    if node.attrib:
        out["attrs"] = dict(sorted(node.attrib.items()))
    if node.text and node.text.strip():
        out["text"] = node.text.strip()
    if len(node):
        out["children"] = [_element(child) for child in node]
    return out


def structure(rel: str, data: bytes) -> Any:
    if rel.endswith(".json"):
        return json.loads(data)
    if rel.endswith(".html"):
        return _element(etree.fromstring(data, etree.HTMLParser()))
    return _element(etree.fromstring(data))


@pytest.fixture(scope="module")
def golden_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    site = tmp_path_factory.mktemp("golden")
    shutil.copytree(SITE, site, dirs_exist_ok=True)
    result = build(load_config(site / "config.toml"), NOW)
    assert not result.catalog.problems
    return result.files


def test_golden_feeds(golden_files: dict[str, bytes]) -> None:
    update = os.environ.get("UPDATE_GOLDEN") == "1"
    expected_names = {p.relative_to(GOLDEN).as_posix()[: -len(".golden.json")]
                      for p in GOLDEN.rglob("*.golden.json") if p.parent.name != "digest"}
    if not update:
        assert set(golden_files) == expected_names
    for rel, data in sorted(golden_files.items()):
        target = GOLDEN / f"{rel}.golden.json"
        actual = structure(rel, data)
        if update:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(actual, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            continue
        assert actual == json.loads(target.read_text(encoding="utf-8")), rel


def test_golden_digest(tmp_path: Path) -> None:
    """The digest of the mini-site's one audience: the HTML as a tree, the text part, subject and
    preheader, compared with tests/golden/digest/ (each part of the mail as its reader sees it)."""
    shutil.copytree(SITE, tmp_path, dirs_exist_ok=True)
    config = load_config(tmp_path / "config.toml")
    catalog = load_catalog(config)
    plan = plan_issue(config.audience("bouwers"), catalog.articles, NOW)
    digest = render_issue(plan, catalog.rendered, digest_settings(config))
    actual = {
        "subject": digest.subject,
        "preheader": digest.preheader,
        "article_ids": list(digest.article_ids),
        "text": digest.text.splitlines(),
        "html": structure("digest.html", digest.html.encode("utf-8")),
    }
    target = GOLDEN / "digest" / "bouwers.golden.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(actual, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return
    expected = json.loads(target.read_text(encoding="utf-8"))
    for part in ("subject", "preheader", "article_ids", "text", "html"):
        assert actual[part] == expected[part], part
