#!/usr/bin/env bash
# Builds an example plugin written in Python or JavaScript into a component.
#
#   plugins/examples/build.sh python OUT.wasm
#   plugins/examples/build.sh javascript OUT.wasm
#   plugins/examples/build.sh install        # only install both compilers
#
# The compilers come from the registries and are pinned: componentize-py
# (PyPI, python-incident-watch/requirements.txt) in a virtual environment
# under target/examples/, ComponentizeJS (npm, js-incident-watch's
# package-lock.json) in js-incident-watch/node_modules. Each is installed on
# first use; after that a build runs offline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
usage="usage: build.sh python|javascript OUT.wasm, or build.sh install"
lang=${1:?$usage}
py_src=$here/python-incident-watch
js_src=$here/js-incident-watch
venv=$root/target/examples/python-venv

install_python() {
    # Reinstalled when requirements.txt changes (the copy in the venv says
    # what it holds).
    if ! cmp -s "$py_src/requirements.txt" "$venv/requirements.txt"; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$py_src/requirements.txt"
        cp "$py_src/requirements.txt" "$venv/requirements.txt"
    fi
}

install_javascript() {
    if ! cmp -s "$js_src/package-lock.json" "$js_src/node_modules/.package-lock.json"; then
        npm ci --prefix "$js_src" --no-audit --no-fund --loglevel=error
    fi
}

if [ "$lang" = install ]; then
    install_python
    install_javascript
    exit 0
fi
out=${2:?$usage}
case $out in /*) ;; *) out=$PWD/$out ;; esac

case $lang in
python)
    install_python
    cd "$py_src"
    "$venv/bin/componentize-py" --wit-path "$root/wit" --world plugin-with-settings \
        componentize --python-path . app --output "$out"
    ;;
javascript)
    install_javascript
    node "$js_src/build.mjs" "$out"
    ;;
*)
    echo "build.sh: unknown language \`$lang\`; $usage" >&2
    exit 2
    ;;
esac
