"""Imports and exports: graded samples from JSONL files and Inspect AI logs, tables to files.

:func:`import_samples` (JSONL), :func:`import_inspect_logs` (Inspect AI eval logs) and
:func:`export_store` (Parquet or JSONL, one folder of samples per model).
"""

from audit.io.export import EXPORT_FORMATS, ExportResult, export_store, partition_folder
from audit.io.import_samples import ImportedSample, ImportResult, import_samples
from audit.io.inspect_import import (
    InspectImportResult,
    InspectMapping,
    import_inspect_log,
    import_inspect_logs,
    load_mapping,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "ImportResult",
    "ImportedSample",
    "InspectImportResult",
    "InspectMapping",
    "export_store",
    "import_inspect_log",
    "import_inspect_logs",
    "import_samples",
    "load_mapping",
    "partition_folder",
]
