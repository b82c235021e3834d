# bash experiments/device_calls/stash_large_files.sh out|back
# Moves the tracked files over 300 kB (goldens, shipped toy models, plots: about 45 MB) out of the working tree
# into ../stash_large_files so that a device call can carry a run folder within its 64 MiB, and puts them back.
# KEEP="path ..." leaves those tracked files in place (e.g. the stage-1 export that a resumed stage 2 reads).
# Never commit while they are out.
set -e
cd "$(dirname "$0")/../.."
S=../stash_large_files
if [ "$1" = out ]; then
  git ls-files -z | xargs -0 du -b | awk '$1 > 300000 {print $2}' > /tmp/stash_large_files.list
  for k in ${KEEP:-}; do grep -v -F -x "$k" /tmp/stash_large_files.list > /tmp/stash_large_files.keep || true
    mv /tmp/stash_large_files.keep /tmp/stash_large_files.list; done
  while read -r f; do mkdir -p "$S/$(dirname "$f")"; mv "$f" "$S/$f"; done < /tmp/stash_large_files.list
  echo "moved $(wc -l < /tmp/stash_large_files.list) files; the tracked tree is now $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1)"
elif [ "$1" = back ]; then
  (cd "$S" && find . -type f) | while read -r f; do mkdir -p "$(dirname "$f")"; mv "$S/$f" "$f"; done
  git status --short | head
  echo "restored"
else
  echo "usage: $0 out|back" >&2; exit 2
fi
