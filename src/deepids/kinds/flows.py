"""The flows record kind: CICFlowMeter-style flows (files, captures, live records).

Canonical columns: :mod:`deepids.io.schema` (metadata, ``FLOW_FEATURES`` or a generic table's
columns, ``label``). Rules: :mod:`deepids.io.cast`. Files: :func:`deepids.io.iter_flow_batches`
(CSV, Parquet, packet captures). Live records: :func:`deepids.io.records.records_to_table`.

Connection logs (Zeek ``conn.log``, Suricata EVE ``flow`` events, nfdump CSV, NFStream) are
flows too: :data:`CONNECTION_LOGS` is their registered reader (asked before the kind's own),
giving the same metadata columns (``flow_id`` ... ``timestamp``) and the same record numbers as
a stream of the same lines (:func:`deepids.io.connlogs.iter_conn_chunks`); their live lines are
read by :mod:`deepids.io.connlogs.live`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deepids.io.connlogs import is_conn_path, iter_conn_chunks
from deepids.io.flows import iter_flow_batches
from deepids.io.records import CanonicalRecords, records_to_table
from deepids.io.schema import LABEL, METADATA_COLUMNS
from deepids.kinds import FileReader, RecordKind


def _read_flow_tables(paths, *, batch_size: int, layout=None, label_column=None):
    return iter_flow_batches(paths, layout=layout, label_column=label_column, batch_size=batch_size)


#: Zeek, Suricata, nfdump and NFStream files and folders: the flows kind's registered reader
CONNECTION_LOGS = FileReader("connection logs", claims=is_conn_path, read_chunks=iter_conn_chunks)


class FlowKind(RecordKind):
    name = "flows"
    id_columns = (*METADATA_COLUMNS, LABEL)
    default_chunk = 100_000      # a 5-million-flow CSV scores under 2 GB (bench/)

    def claims(self, paths: Sequence[Path]) -> bool:
        return True              # the fallback kind: anything not claimed by a more specific one

    def own_reader(self) -> FileReader:
        return FileReader("flow tables", claims=lambda p: True, read_chunks=_read_flow_tables)

    def canonicalise(self, items: Sequence[Any], required: list[str], text_columns: Iterable[str] = (),
                     optional: Iterable[str] = ()) -> CanonicalRecords:
        return records_to_table(items, required, text_columns, optional_text=optional)

    def reads_model(self, input_columns: Sequence[str]) -> bool:
        return True
