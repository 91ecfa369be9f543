"""Pure domain rules: ID numbers, phone numbers, the SMS grammar and reply text (no I/O)."""
