"""Citizen records: the bulk import and the lookup's reads.

- :mod:`.files` reads an import file (CSV or JSONL) into raw rows;
- :mod:`.imports` validates the rows and drives the import in batches;
- :mod:`.store` writes a batch of validated rows (COPY on PostgreSQL, executemany on SQLite);
- :mod:`.records` reads one citizen's record for a lookup (through the read replica if any),
  and the ID numbers an admin's access report covers.
"""
