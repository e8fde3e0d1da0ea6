"""Write README.md from nbs/index.ipynb (nbdev_readme needs quarto, which is not installable offline).

Markdown cells are copied; code cells are shown as python blocks unless they carry `#| hide`.
`python .ci/readme.py --check` exits 1 when README.md is out of date.
"""
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def render(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    out = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src: continue
        if c["cell_type"] == "markdown": out.append(src)
        elif c["cell_type"] == "code" and "#| hide" not in src and "#|hide" not in src:
            out.append("```python\n" + src + "\n```")
    text = "\n\n".join(out) + "\n"
    return "<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n" + text


if __name__ == "__main__":
    text, readme = render(root / "nbs" / "index.ipynb"), root / "README.md"
    if "--check" in sys.argv:
        if readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`")
    else:
        readme.write_text(text, encoding="utf-8")
