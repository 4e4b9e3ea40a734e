#!/usr/bin/env bash
# Nightly backup of the outbox data directory, for cron or a systemd timer (the package
# installs this script as /usr/lib/outbox/backup.sh):
#   15 3 * * *  outbox  /usr/lib/outbox/backup.sh
# With the server running, `outbox backup` asks it (over the admin socket) for a consistent
# snapshot; with it stopped, it copies the directory. Each backup is a directory that works
# as --data-dir and carries a manifest with counts and a checksum (`outbox restore` checks it).
#
# Each run writes a new directory, outbox-<UTC time to the nanosecond>-<random>, so two runs
# never collide, not even within one second. A backup is complete once its manifest
# (outbox-backup.json, written last) exists; files are 0600 and directories 0700. A failed
# run removes its own incomplete directory, still prunes, and exits with the failure's code.
#
# Pruning: complete backups older than KEEP_DAYS are removed, but never the newest complete
# one (so a run of failures cannot prune the last good backup away); incomplete directories
# left by a killed run are removed once they are more than a day old.
set -uo pipefail # no -e: the pruning runs after a failed backup too
export LC_ALL=C  # names sort by their time stamps

DATA_DIR=${OUTBOX_DATA_DIR:-/var/lib/outbox}
BACKUP_ROOT=${OUTBOX_BACKUP_ROOT:-/var/backups/outbox}
KEEP_DAYS=${OUTBOX_BACKUP_KEEP_DAYS:-14}
OUTBOX_BIN=${OUTBOX_BIN:-outbox}
MANIFEST=outbox-backup.json

case "$KEEP_DAYS" in
  ''|*[!0-9]*) echo "backup.sh: OUTBOX_BACKUP_KEEP_DAYS must be a whole number of days, got '$KEEP_DAYS'" >&2; exit 2 ;;
esac

umask 077
if ! mkdir -p "$BACKUP_ROOT"; then
  echo "backup.sh: cannot create $BACKUP_ROOT; set OUTBOX_BACKUP_ROOT to a writable directory" >&2
  exit 2
fi

status=0
if ! dest=$(mktemp -d "$BACKUP_ROOT/outbox-$(date -u +%Y%m%dT%H%M%S.%NZ)-XXXXXX"); then
  echo "backup.sh: cannot create a backup directory in $BACKUP_ROOT" >&2
  status=2
elif "$OUTBOX_BIN" backup "$dest" --data-dir "$DATA_DIR"; then
  echo "backup.sh: wrote $dest"
else
  status=$?
  echo "backup.sh: the backup into $dest failed (exit $status); removing the incomplete copy" >&2
  rm -rf -- "$dest"
fi

# Prune. The glob lists names in time order, so the last complete one is the newest.
newest=""
for d in "$BACKUP_ROOT"/outbox-*/; do
  [ -f "$d$MANIFEST" ] && newest=${d%/}
done
find "$BACKUP_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'outbox-*' -mtime +0 -print0 |
  while IFS= read -r -d '' old; do
    if [ ! -f "$old/$MANIFEST" ]; then
      echo "backup.sh: removing $old (incomplete, more than a day old)"
      rm -rf -- "$old"
    fi
  done
find "$BACKUP_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'outbox-*' -mtime +"$KEEP_DAYS" -print0 |
  while IFS= read -r -d '' old; do
    if [ "$old" != "$newest" ] && [ -f "$old/$MANIFEST" ]; then
      echo "backup.sh: removing $old (older than $KEEP_DAYS days)"
      rm -rf -- "$old"
    fi
  done
exit "$status"
