#!/usr/bin/env bash
# Renders a report.html in headless Chromium (Debian package `chromium`): a screenshot to look at,
# and a count of the <img> elements that loaded and decoded (naturalWidth > 0) after page load.
# Usage: bench/check_report.sh results/gmm2d/report.html [/tmp/report.png]
set -euo pipefail
page=$(realpath "$1"); shot=${2:-/tmp/report.png}
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)")
chromium "${flags[@]}" --window-size=1200,2400 --screenshot="$shot" "file://$page" 2>/dev/null
probe=$(mktemp --suffix=.html)
sed 's|</body>|<script>addEventListener("load",()=>{const i=[...document.images];document.body.dataset.loaded=i.filter(x=>x.complete\&\&x.naturalWidth>0).length+"/"+i.length})</script></body>|' \
    "$page" > "$probe"
loaded=$(chromium "${flags[@]}" --virtual-time-budget=10000 --dump-dom "file://$probe" 2>/dev/null \
         | grep -o 'data-loaded="[0-9]*/[0-9]*"' | cut -d'"' -f2)
rm -f "$probe"
echo "screenshot: $shot; images loaded: $loaded"
[ -n "$loaded" ] && [ "${loaded%/*}" = "${loaded#*/}" ] && [ "${loaded#*/}" != 0 ]
