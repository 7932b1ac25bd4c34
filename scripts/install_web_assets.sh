#!/usr/bin/env bash
# Install the arena UI's front-end libraries from the npm registry (pinned by
# gateway/web/package-lock.json) and copy their browser builds into gateway/web/vendor/, which
# the gateway serves itself: the UI loads nothing from a CDN and works with no internet.
set -euo pipefail
cd "$(dirname "$0")/../gateway/web"

if ! command -v npm >/dev/null 2>&1; then
    echo "npm is required to install the arena UI's libraries (apt-get install -y npm)" >&2
    exit 1
fi
# swagger-ui-dist depends on @scarf/scarf, whose install script would report the download.
SCARF_ANALYTICS=false npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

rm -rf vendor
mkdir -p vendor
# ES module builds, loaded with <script type="module">; licences travel with them.
cp node_modules/marked/lib/marked.esm.js vendor/marked.esm.js
cp node_modules/marked/LICENSE vendor/marked.LICENSE
cp node_modules/dompurify/dist/purify.es.mjs vendor/purify.es.mjs
cp node_modules/dompurify/LICENSE vendor/dompurify.LICENSE
# Charts of the leaderboard: Chart.js's browser build (defines window.Chart, every chart type
# registered) and its matrix chart type (the heatmaps), loaded as classic scripts before the page's module.
cp node_modules/chart.js/dist/chart.umd.min.js vendor/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md vendor/chart.js.LICENSE
cp node_modules/chartjs-chart-matrix/dist/chartjs-chart-matrix.min.js vendor/chartjs-chart-matrix.min.js
cp node_modules/chartjs-chart-matrix/LICENSE vendor/chartjs-chart-matrix.LICENSE
# Swagger UI for both apps' /docs (shared/api_docs.py serves it): the browser bundle and its CSS.
docs=../../shared/api_docs_assets/vendor
rm -rf "$docs"
mkdir -p "$docs"
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css "$docs"/
cp node_modules/swagger-ui-dist/LICENSE "$docs"/swagger-ui.LICENSE
echo "Arena web assets installed into gateway/web/vendor/ and shared/api_docs_assets/vendor/"
