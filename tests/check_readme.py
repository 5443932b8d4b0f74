"""Fails when README.md's API example differs from the file it names (which a test builds)."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
readme = (root / "README.md").read_text()
found = re.findall(r"<!-- example: (\S+) -->\n```c\n(.*?)```", readme, re.S)
if not found:
    sys.exit("README.md: no '<!-- example: FILE -->' code block found")
for path, code in found:
    if (root / path).read_text() != code:
        sys.exit(f"README.md: the example block differs from {path}")
print(f"{len(found)} README example(s) match their files")
