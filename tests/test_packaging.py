"""An installed accrual (a wheel, not this checkout) carries every file the
code reads at run time: the streams file, the default rules, the pages'
templates and stylesheet, the catalogue, the offers and the common
passwords. (An editable install reads them from the checkout and cannot
tell.)"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = {
    "accrual/streams.yaml", "engine/rulesets/default.toml", "web/static/style.css", "web/templates/base.html",
    "web/data/catalog.toml", "web/data/offers.toml", "web/data/common_passwords.txt",
}


def test_the_wheel_carries_the_files_the_code_reads(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "warning" not in built.stderr.lower(), built.stderr[-3000:]
    (wheel,) = tmp_path.glob("accrual-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert NEEDED <= names, sorted(NEEDED - names)
