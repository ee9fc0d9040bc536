"""Skill catalogues: SKILL.md folders, MCP tool lists, OpenAPI / Swagger specs and SKILLS JSONL as one record.

Every loader returns a :class:`Catalogue` of :class:`Skill` s (id, name,
description, body, metadata); :func:`load_catalogue` detects the kind from the
path. Problems that leave a skill only partly loaded are warnings
(:class:`SkillWarning`, also kept on ``Catalogue.warnings``); duplicate ids
raise :class:`DuplicateSkillError`. See ``docs/skills.md``.
"""

from ragroute.skills.catalogue import KINDS, detect_catalogue, load_catalogue
from ragroute.skills.load_mcp import load_mcp, mcp_tools, skills_from_mcp
from ragroute.skills.load_openapi import load_openapi, skills_from_openapi
from ragroute.skills.load_skill_md import load_skill_md
from ragroute.skills.load_skills_jsonl import load_skills_jsonl
from ragroute.skills.records import Catalogue, DuplicateSkillError, Skill, SkillWarning, WarningLog

__all__ = [
    "KINDS",
    "Catalogue",
    "DuplicateSkillError",
    "Skill",
    "SkillWarning",
    "WarningLog",
    "detect_catalogue",
    "load_catalogue",
    "load_mcp",
    "load_openapi",
    "load_skill_md",
    "load_skills_jsonl",
    "mcp_tools",
    "skills_from_mcp",
    "skills_from_openapi",
]
