"""GCS emulator fixtures (owned by the records stage)."""
