#!/usr/bin/env bash
# Nightly backup of the outbox data directory, for cron or a systemd timer:
#   15 3 * * *  outbox  /usr/local/lib/outbox/backup.sh
# With the server running, `outbox backup` asks it (over the admin socket) for a consistent
# snapshot; with it stopped, it copies the directory. Each backup is a directory that works
# as --data-dir and carries a manifest with counts and a checksum (`outbox restore` checks it).
# Backups older than KEEP_DAYS are removed, but never the newest one.
set -euo pipefail

DATA_DIR=${OUTBOX_DATA_DIR:-/var/lib/outbox}
BACKUP_ROOT=${OUTBOX_BACKUP_ROOT:-/var/backups/outbox}
KEEP_DAYS=${OUTBOX_BACKUP_KEEP_DAYS:-14}
OUTBOX_BIN=${OUTBOX_BIN:-outbox}

case "$KEEP_DAYS" in
  ''|*[!0-9]*) echo "backup.sh: OUTBOX_BACKUP_KEEP_DAYS must be a whole number of days, got '$KEEP_DAYS'" >&2; exit 2 ;;
esac

umask 077
mkdir -p "$BACKUP_ROOT"
dest="$BACKUP_ROOT/outbox-$(date -u +%Y%m%dT%H%M%SZ)"
"$OUTBOX_BIN" backup "$dest" --data-dir "$DATA_DIR"
echo "backup.sh: wrote $dest"

# Prune: only complete backups (with a manifest) count, and the newest always stays.
newest=$(ls -1d "$BACKUP_ROOT"/outbox-* 2>/dev/null | sort | tail -n 1)
find "$BACKUP_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'outbox-*' -mtime +"$KEEP_DAYS" -print0 |
  while IFS= read -r -d '' old; do
    [ "$old" = "$newest" ] && continue
    echo "backup.sh: removing $old (older than $KEEP_DAYS days)"
    rm -rf -- "$old"
  done
