"""Write a Trace as BurstGPT CSV (the 8-column schema), which read_trace reads back identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from burstpilot.errors import BurstpilotError
from burstpilot.traces.readers import BURSTGPT_V2
from burstpilot.traces.table import NO_SESSION, Trace


def _strings(codes: np.ndarray, categories: np.ndarray) -> pa.Array:
    """Dictionary-encoded column -> arrow strings without a Python object per row."""
    cats = pa.array([str(c) for c in categories] + [""], pa.string())
    idx = np.where(codes >= 0, codes, len(categories)).astype(np.int32)
    out = pa.DictionaryArray.from_arrays(pa.array(idx), cats).cast(pa.string())
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


def write_burstgpt_csv(trace: Trace, path) -> Path:
    """Write ``trace`` as BurstGPT CSV: Timestamp,Session ID,Elapsed time,Model,Request tokens,
    Response tokens,Total tokens,Log Type. Floats are written in their shortest round-trip form,
    so reading the file back gives the same arrays. A ``.gz`` suffix compresses the output."""
    path = Path(path)
    failed_nonzero = trace.failed & (trace.response_tokens != 0)
    if failed_nonzero.any():
        raise BurstpilotError(
            f"{path}: BurstGPT CSV marks a failure as Response tokens == 0, but "
            f"{int(failed_nonzero.sum())} failed rows have response tokens"
        )
    if trace.session_labels is not None:
        sess = _strings(trace.session_id, trace.session_labels)
    else:
        sess = pa.array(trace.session_id, mask=trace.session_id == NO_SESSION)
    elapsed = pa.array(trace.elapsed_s, mask=np.isnan(trace.elapsed_s))
    table = pa.table(
        [
            pa.array(trace.arrival_s),
            sess,
            elapsed,
            _strings(trace.model_codes, trace.models),
            pa.array(trace.request_tokens),
            pa.array(trace.response_tokens),
            pa.array(trace.request_tokens + trace.response_tokens),
            _strings(trace.log_type_codes, trace.log_types),
        ],
        names=BURSTGPT_V2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = "gzip" if path.suffix == ".gz" else None
    with pa.output_stream(str(path), compression=compression) as out:
        out.write((",".join(BURSTGPT_V2) + "\n").encode())
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return path
