"""The log: checksummed, size-rotated segment files, their offset indexes, the
manifest, group commit and recovery. It knows nothing of sessions."""
