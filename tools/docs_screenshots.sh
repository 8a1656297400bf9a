#!/usr/bin/env bash
# Screenshots of the built docs site with headless Chromium (Debian's `chromium` package), for reviews:
#   bash tools/docs_screenshots.sh [OUTPUT_DIR]     # default out/docs_screenshots; builds the site first
# Writes front.png (the home page) and one PNG per page named in PAGES (default: models/nequip).
set -euo pipefail
cd "$(dirname "$0")/.."
output="${1:-out/docs_screenshots}"
pages="${PAGES:-models/nequip}"
command -v chromium >/dev/null || { echo "docs_screenshots: needs chromium (apt-get install chromium)" >&2; exit 1; }
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir out/site
mkdir -p "$output"
shoot() {  # shoot PAGE_HTML PNG
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1300 \
    --screenshot="$2" "file://$PWD/out/site/$1" 2>/dev/null
  echo "wrote $2"
}
shoot index.html "$output/front.png"
for page in $pages; do
  shoot "$page/index.html" "$output/$(echo "$page" | tr / _).png"
done
