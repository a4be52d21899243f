"""docs/configuration.md, generated from the schema: every section's keys, types, allowed values,
defaults and the comments beside them in `ttds.config.schema`, plus the recipes and the
migration steps.

    python -m ttds.config.reference > docs/configuration.md

Why generated: a hand-written reference drifts from the code the first time a field is added;
this one is the schema's own text, and tests/config/test_reference.py fails when the committed
file is not what this renders.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

from ttds.config import schema
from ttds.config.loader import to_dict
from ttds.config.migrate import CONFIG_VERSION, MODEL_STEPS, STEPS, VERSION_KEY
from ttds.config.recipes import list_recipes

__all__ = ["render", "main"]

# the job configs, their entry point, and how their keys are given
JOBS: list[tuple[type, str, str]] = [
    (schema.TTDSJobConfig, "jobs/train_ttds.py", "`--section.key=value`, or a YAML file with `--config FILE`"),
    (schema.TokenizerJobConfig, "jobs/train_tokenizer.py", "`--section.key=value`, or a YAML file with `--config FILE`"),
    (schema.BenchConfig, "jobs/benchmark.py", "its command-line flags (`--budget-epochs` sets `budget_epochs`)"),
    (schema.SASRecConfig, "jobs/benchmark.py --systems sasrec", "`--set sasrec:key=value` (a recipe's `config`)"),
    (schema.GRU4RecConfig, "jobs/benchmark.py --systems gru4rec", "`--set gru4rec:key=value` (a recipe's `config`)"),
    (schema.TuneSettings, "jobs/tune_ttds.py", "the sweep file's `tune:` section (configs/tune_default.yaml) or its flags"),
    (schema.RecommenderConfig, "serve_apps/config.yaml", "the Serve app's `user_config` (beside `model_dir`)"),
    (schema.AdmissionConfig, "serve_apps/config.yaml", "the Serve app's `user_config.admission` (the ingress's time-bounded admission)"),
]


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the `#` comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def field_docs(cls: type) -> dict[str, str]:
    """Each field's comment in the source: the comment lines right above it, then the one
    beside it (the schema's convention)."""
    source = inspect.getsource(sys.modules[cls.__module__])
    comments = _comments(source)
    lines = source.splitlines()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    out = {}
    for stmt in node.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        above = []
        ln = stmt.lineno - 1
        while ln >= 1 and lines[ln - 1].strip().startswith("#"):
            above.insert(0, comments[ln])
            ln -= 1
        beside = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
        text = " ".join(above)
        if text and beside and not text.endswith((".", ":", ";")):
            text += "."
        out[stmt.target.id] = " ".join([text, *beside]).strip()
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "str" if all(isinstance(a, str) for a in typing.get_args(tp)) else "int"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{to_dict(f.default)!r}`" if f.default != "" else '`""`'
    if f.default_factory is not dataclasses.MISSING:
        return f"`{to_dict(f.default_factory())!r}`"
    return "required"


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted name, class) of `cls` and every section under it, depth first."""
    hints = typing.get_type_hints(cls)
    out = [(prefix, cls)]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += _sections(tp, f"{prefix}{f.name}.")
    return out


def render_section(cls: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # dataclass's generated signature: no docstring
        doc = ""
    lines = [f"### `{prefix.rstrip('.')}` ({cls.__name__})" if prefix else f"### {cls.__name__}: top-level keys", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            lines.append(f"| `{prefix}{f.name}` | section | | | {tp.__name__}: see `{prefix}{f.name}` below |")
            continue
        allowed_ = ", ".join(f"`{a}`" for a in typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else ""
        lines.append(f"| `{prefix}{f.name}` | {_type_name(tp)} | {_cell(_default(f))} | {allowed_} | {_cell(docs.get(f.name) or '')} |")
    return lines + [""]


def render() -> str:
    """The whole reference, as docs/configuration.md holds it."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `platform/ttds/config/schema.py` by `python -m ttds.config.reference > docs/configuration.md`;",
        "do not edit by hand (`tests/config/test_reference.py` fails when this file is out of date).",
        "",
        "A job resolves its config as defaults < `--config FILE` (YAML) < a recipe (`--ablation NAME`) <",
        "`--section.key=value` on the command line; unknown keys and values outside a key's allowed list are",
        "refused by name before any work starts, and `--print-config` prints the result. Every run writes",
        f"its resolved config (`config.yaml`, and a model's `ttds.json`) with `{VERSION_KEY}: {CONFIG_VERSION}`; an older",
        "file is brought to the current version on load (see Migration below). Decisions behind defaults are",
        "argued in the comments from validation figures where they exist; history: docs/findings.md.",
        "",
        "## Jobs",
        "",
        "| config | used by | keys given as |",
        "|---|---|---|",
    ]
    out += [f"| `{cls.__name__}` | `{where}` | {how} |" for cls, where, how in JOBS]
    out += [""]
    seen: set[type] = set()
    for cls, where, _ in JOBS:
        out += [f"## {cls.__name__} (`{where}`)", ""]
        for prefix, section in _sections(cls):
            if section in seen:
                out += [f"`{prefix.rstrip('.') or section.__name__}`: {section.__name__}, as above.", ""]
                continue
            seen.add(section)
            out += render_section(section, prefix)
    out += [
        "## Recipes (`configs/recipes/*.yaml`)",
        "",
        "`jobs/train_ttds.py --ablation NAME` applies a `ttds` recipe; `jobs/benchmark.py --systems NAME,...` runs any.",
        "A new YAML file in the folder is a new recipe (format: `ttds.config.recipes`).",
        "",
        "| recipe | kind | label | config | description |",
        "|---|---|---|---|---|",
    ]
    for name, r in list_recipes().items():
        kind = r.kind + (f" ({r.model})" if r.model and r.model != name else "")
        cfg = "; ".join(f"`{k}={v!r}`" for k, v in _flat(r.config).items()) or "defaults"
        out.append(f"| `{name}` | {kind} | {_cell(r.label)} | {_cell(cfg)} | {_cell(r.description)} |")
    out += [
        "",
        "## Migration (`ttds.config.migrate`)",
        "",
        f"Current `{VERSION_KEY}`: {CONFIG_VERSION}. A file without one predates versions (0). Loading an older",
        "file fills each field added since with what runs did before it existed (not always today's default):",
        "",
        "| version | where | key | value filled into older files |",
        "|---|---|---|---|",
    ]
    for version in sorted(STEPS):
        out += [f"| {version} | job config | `{k}` | `{v!r}` |" for k, v in STEPS[version].items()]
    for version in sorted(MODEL_STEPS):
        out += [f"| {version} | model ttds.json | `{k}` | `{v!r}` |" for k, v in MODEL_STEPS[version].items()]
    return "\n".join(out) + "\n"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or write it to the path given (`--out docs/configuration.md`)."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write here instead of stdout")
    args = p.parse_args(argv)
    text = render()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
