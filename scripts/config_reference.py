"""Write docs/configuration.md from the config's own declarations (DNSD/schema.py): a test checks that the page is
current, so run this after adding or changing a key:  python scripts/config_reference.py"""
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from DNSD.changes import may_branch, setting, sweep_refusal  # noqa: E402
from DNSD.schema import Config, config_fields, describe, flag_name, format_default, scope  # noqa: E402

PAGE = os.path.join(ROOT, "docs", "configuration.md")
INTRO = """# Configuration reference

Generated from `DNSD/schema.py` by `python scripts/config_reference.py`; a test fails when it is out of date.

Every key is set, lowest precedence first, by its default (the paper's recipe), a YAML file (`--config FILE` or the
name of a shipped config), its flag, or `-o section.key=value`. `dnsd train --help` lists the same keys; `dnsd train
--print-config` prints the resolved config. Keys marked *may change* may differ from a checkpoint's when it is
evaluated or resumed, because they do not change what is computed; keys marked *branch may change* may change in a
`--branch` (how training goes on), the others never; keys marked *not swept* cannot vary within a sweep.
"""


def reference():
    lines = [INTRO]
    for section in dataclasses.fields(Config):
        lines += [f"## {section.name}", "", "| key | flag | default | allowed | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for name, f, _ in config_fields():
            if name != section.name:
                continue
            notes = []
            applies = scope(name, f)
            if applies:
                notes.append(f"only with {applies[0]} {', '.join(applies[1])}")
            key = f"{name}.{f.name}"
            if setting(key):
                notes.append("may change")
            elif may_branch(key):
                notes.append("branch may change")
            if sweep_refusal(key) and not setting(key):
                notes.append(f"not swept: {sweep_refusal(key)}")
            meaning = f.metadata["help"] + (f" ({'; '.join(notes)})" if notes else "")
            lines.append(f"| `{name}.{f.name}` | `{flag_name(f)}` | `{format_default(f)}` | {describe(f) or ''} | "
                         f"{meaning.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(PAGE, "w") as stream:
        stream.write(reference())
    print(f"wrote {PAGE}")
