"""The bad-input and fault suite: every command against bad and truncated files, kills and concurrent runs."""
