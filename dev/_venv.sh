# Sourced by dev/demo and dev/test: a project virtual environment with the
# package installed (editable), re-installed when pyproject.toml changes.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ACCRUAL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "accrual needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
    exit 2
fi
stamp="$venv/.accrual-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)$1"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing accrual${1:+ with [$1]} into $venv" >&2
    # pip's output goes to a log, shown only if the install fails: even with
    # --quiet pip shows the build backend's notices (setuptools says one on
    # every editable install), and the first screen should be the engine's.
    install_log="$venv/.accrual-install.log"
    if ! { "$venv/bin/python" -m pip install --upgrade pip &&
        "$venv/bin/python" -m pip install -e "$root${1:+[$1]}"; } >"$install_log" 2>&1; then
        cat "$install_log" >&2
        echo "installing accrual into $venv failed (log: $install_log)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
